// Package media serves end-to-end encrypted media: resumable uploads (the
// tus 1.0 protocol, through github.com/tus/tusd/v2 used as a library),
// content-addressed blobs, ranged downloads, per-user daily quotas and
// expiry. It is mounted under /v1/media/ on a gateway's listener
// (node/node.go wires it).
//
// # What it owns
//
//   - The HTTP surface under /v1/media/: creation (POST /v1/media/),
//     HEAD/PATCH/DELETE /v1/media/<upload-id> for the owner of the upload,
//     and GET /v1/media/blobs/<digest> for any authenticated user.
//   - Uploads in progress and published blobs, through a BlobStore
//     (blobstore.go; LocalStore in local.go keeps both in one directory,
//     S3Store in s3store.go in a bucket every node shares).
//   - The step from a finished upload to a published blob (finish.go): the
//     SHA-256 of the ciphertext must equal the digest the client declared
//     (at creation, or on the PATCH that completes a deferred-digest one);
//     only then is the blob published under that digest and its record
//     written (persistence.MediaStore). The local store hashes the bytes
//     as PATCH bodies write them, with a checkpoint beside the upload for
//     a resume after a crash (hashstate.go), so finishing reads back only
//     what no hash state covers; the S3 store streams the upload back.
//   - The sweeper (sweep.go) that deletes blobs a TTL after their last upload
//     or re-reference, and unfinished uploads a TTL after their creation.
//
// # What it never touches
//
//   - Plaintext, keys and file names: clients encrypt before uploading and
//     send key and digest inside the end-to-end encrypted message. The
//     server stores the bytes exactly as they arrive and keeps only the
//     digest, size, owner and times. Client-supplied metadata other than the
//     declared digest (optional) is dropped at creation; no client bytes
//     are logged.
//   - Tokens: a request is authenticated by the Authenticator the node passes
//     in (the gateway's bearer-token check), so media never sees keys.
//   - Messages, grains and sessions: a media message is an ordinary
//     end-to-end encrypted message that carries a digest.
//
// # Invariants
//
//	M1: a blob is published only after its bytes hashed to its digest, so a
//	    blob's name is always the SHA-256 of its bytes. The bytes are hashed
//	    as they were written to the upload, or read back from it; a hash
//	    state that disagrees with the declared digest is not believed
//	    (the upload is read back), and one that is not sound is dropped.
//	M2: a blob's bytes are published before its record is written, and
//	    deleted before its record is removed: a record never names bytes
//	    that were never complete. (Bytes without a record are re-recorded
//	    by the next upload of the same digest.)
//	M3: an upload is served (HEAD, PATCH, DELETE) only to the user recorded
//	    as its owner when it was created; the owner is set by the server,
//	    never by the client. Everyone else gets 404.
//	M4: usage counts against the daily quota when an upload is created,
//	    whether or not it is finished; a re-reference of an existing blob
//	    stores nothing and counts nothing.
//
// # Protocol
//
// Every request carries "Authorization: Bearer <access token>" (401 with
// a JSON error otherwise). Creation sends Tus-Resumable: 1.0.0,
// Upload-Length and, when the client knows it (a forward),
// "Upload-Metadata: sha256 <base64 of the lowercase hex SHA-256 of the
// ciphertext>". An existing digest is answered 200 with
// Courier-Blob-Digest and no Location; a new one 201 with Location
// /v1/media/<upload-id> and Upload-Expires. A creation without sha256
// (a new file: its fresh key makes a ciphertext no blob shares) is a
// deferred-digest upload, always 201: the PATCH that completes it must
// carry "Courier-Blob-Digest: <lowercase hex SHA-256 of the
// ciphertext>", which the server checks as it checks a declared one;
// without it the answer is 400 and the bytes are kept, and a PATCH at
// Upload-Offset == Upload-Length with an empty body and the header
// finishes the upload (a HEAD of such an upload only gives the offset).
// The response to the PATCH that completes an upload carries
// Courier-Blob-Digest, or 400 "digest mismatch" (the upload is then
// gone). Over --max-media: 413; over the
// daily quota: 429 with Retry-After; disk full: 507 with the partial
// upload kept; Upload-Offset not the server's: 409; a PATCH interrupted
// by a newer request for its upload: 423; a PATCH silent for the idle
// timeout: 500 ERR_READ_TIMEOUT; the server stopping: 503. After each of
// the last five, HEAD gives the offset to resume from.
package media
