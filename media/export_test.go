package media

import (
	"crypto/sha256"
	"os"
)

// SetCheckpointEvery sets how many bytes apart s saves hash states; call it
// before s is used.
func SetCheckpointEvery(s *LocalStore, n int64) { s.checkpointEvery = n }

// UploadBytesReadBack is how many bytes of uploads s has read back.
func UploadBytesReadBack(s *LocalStore) int64 { return s.readBack.Load() }

// WaitHashSaves waits for the hash states being saved.
func WaitHashSaves(s *LocalStore) {
	s.hashes.mu.Lock()
	es := make([]*uploadHash, 0, len(s.hashes.m))
	for _, e := range s.hashes.m {
		es = append(es, e)
	}
	s.hashes.mu.Unlock()
	for _, e := range es {
		e.mu.Lock()
		e.waitSave()
		e.mu.Unlock()
	}
}

// HashStateFile is where s keeps upload id's hash state.
func HashStateFile(s *LocalStore, id string) string { return s.statePath(id) }

// EncodeHashState is the saved hash state of upload id after data.
func EncodeHashState(id string, data []byte) []byte {
	h := sha256.New()
	h.Write(data)
	b, err := encodeState(id, int64(len(data)), h)
	if err != nil {
		panic(err)
	}
	return b
}

// HashStateOffset reads how many bytes the saved state of upload id covers.
func HashStateOffset(s *LocalStore, id string) (int64, error) {
	b, err := os.ReadFile(s.statePath(id))
	if err != nil {
		return 0, err
	}
	_, off, err := decodeState(id, b)
	return off, err
}

// ReadUploadsBack makes finish read every upload back and hash it, ignoring
// the hash computed while it was written (the behaviour before it was).
func ReadUploadsBack(s *LocalStore) { s.noIncremental = true }
