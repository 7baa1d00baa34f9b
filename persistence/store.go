// Package persistence defines what Courier keeps durably. Every
// implementation (embedded, scylla) must pass the conformance suite in
// persistence/storetest, so callers may rely on exactly what is written here.
package persistence

import (
	"context"
	"errors"
	"time"

	"github.com/courier-im/courier/protos/courierpb"
)

// Sentinel errors callers branch on. Implementations wrap them with context.
var (
	// ErrNotFound: the record does not exist (or has expired).
	ErrNotFound = errors.New("not found")
	// ErrHandleTaken: another user already registered this handle.
	ErrHandleTaken = errors.New("handle already taken")
	// ErrUnavailable: the store cannot be reached now; the operation may be
	// retried and was not acknowledged.
	ErrUnavailable = errors.New("store unavailable")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
)

// DefaultInboxTTL is how long an undelivered inbox entry is kept.
const DefaultInboxTTL = 30 * 24 * time.Hour

// Store is everything Courier persists. Implementations are safe for
// concurrent use.
type Store interface {
	UserStore
	InboxStore
	SequenceStore
	SecretStore
	ProfileStore
	KeyStore
	// Close flushes pending writes and releases the store. Calls after Close
	// fail with ErrClosed.
	Close() error
}

// User is a registered account.
type User struct {
	ID        string
	Handle    string
	CreatedAt time.Time
}

// Device is one device of a user. SecretHash is the SHA-256 of the device
// secret; the secret itself is never stored.
type Device struct {
	UserID     string
	DeviceID   uint32
	SecretHash []byte
	CreatedAt  time.Time
}

// UserStore keeps users, their unique handles and their devices.
type UserStore interface {
	// CreateUser stores u and claims u.Handle atomically: when the handle is
	// taken it fails with ErrHandleTaken and stores nothing.
	CreateUser(ctx context.Context, u User) error
	GetUser(ctx context.Context, userID string) (User, error)
	GetUserByHandle(ctx context.Context, handle string) (User, error)
	// PutDevice creates or replaces a device.
	PutDevice(ctx context.Context, d Device) error
	GetDevice(ctx context.Context, userID string, deviceID uint32) (Device, error)
	// ListDevices returns a user's devices ordered by DeviceID.
	ListDevices(ctx context.Context, userID string) ([]Device, error)
	// DeleteDevice removes a device (unlinking); removing one that does not
	// exist is not an error.
	DeleteDevice(ctx context.Context, userID string, deviceID uint32) error
}

// InboxAppend is one entry for one device inbox.
type InboxAppend struct {
	UserID   string
	DeviceID uint32
	Entry    *courierpb.InboxEntry
}

// DedupeRecord remembers that a (sender, client_msg_id) was stored for a
// recipient, so a retried send is acknowledged without being stored twice.
type DedupeRecord struct {
	RecipientID string
	SenderID    string
	ClientMsgID string
	StoredAtMs  int64
}

// InboxStore keeps one ordered inbox per device.
type InboxStore interface {
	// Append durably stores entries and dedupe records in one atomic write:
	// when it returns nil every entry and record survives a crash; when it
	// fails none is visible. Entries and records expire after the inbox TTL.
	// Appending an entry whose (user, device, inbox_seq) exists replaces it.
	Append(ctx context.Context, entries []InboxAppend, dedupe []DedupeRecord) error
	// Range returns up to limit unexpired entries of one device inbox with
	// inbox_seq > after, in ascending inbox_seq order.
	Range(ctx context.Context, userID string, deviceID uint32, after uint64, limit int) ([]*courierpb.InboxEntry, error)
	// DeleteRange deletes the entries of one device inbox with
	// after < inbox_seq <= through. Acks pass the previous ack point as
	// after, so a store never walks over what it deleted before.
	//
	// A delete need not be durable when DeleteRange returns. A delete that a
	// crash undoes only brings back entries their device already consumed:
	// a reconnecting client resumes after its last inbox_seq and skips them,
	// and the first ack of the next activation starts at 0 and deletes them
	// again. So a store may skip its own fsync here and let the next durable
	// write carry the delete to disk.
	DeleteRange(ctx context.Context, userID string, deviceID uint32, after, through uint64) error
	// DeleteInbox deletes every entry of one device inbox.
	DeleteInbox(ctx context.Context, userID string, deviceID uint32) error
	// GetDedupe returns the record for (recipient, sender, clientMsgID) or
	// ErrNotFound. devices are the recipient's current devices: a store may
	// keep a record beside the entries it was appended with, in those
	// devices' inboxes, and then finds it only there.
	GetDedupe(ctx context.Context, recipientID string, devices []uint32, senderID, clientMsgID string) (DedupeRecord, error)
}

// LazyAppender is implemented by stores that can append inbox entries
// without waiting for the disk. AppendLazy is Append without the
// durability promise: when it returns the entries are visible to reads; a
// crash may lose them, but never while keeping a write that started after
// AppendLazy returned (a single log in commit order). It is for entries the
// server can derive again, such as the delivered receipt an ack sends: the
// acked entries are deleted only after the receipt is appended, so a crash
// that loses the receipt loses their delete too, and the next ack or
// resume sends the receipt again.
type LazyAppender interface {
	AppendLazy(ctx context.Context, entries []InboxAppend) error
}

// SequenceStore leases blocks of sequence numbers through a compare-and-set,
// so two activations of one grain never hand out the same number.
type SequenceStore interface {
	// LeaseBlock reserves the next size numbers of the named counter and
	// returns the first and last of them. Numbers start at 1. Concurrent
	// leases of one counter, from any process, never overlap.
	LeaseBlock(ctx context.Context, counter string, size uint64) (first, last uint64, err error)
	// LastLeased returns the last number any lease of the named counter has
	// reserved, 0 if none has. Every lease that returned before the call
	// is counted. It writes nothing: a grain that only needs to know where
	// earlier activations stopped (an attaching device) reads this rather
	// than leasing a block it may never use.
	LastLeased(ctx context.Context, counter string) (uint64, error)
}

// DeviceKeys is a device's long-lived public key material for the Signal
// protocol: its identity key and current signed prekey. The server stores
// public keys only.
type DeviceKeys struct {
	RegistrationID        uint32
	IdentityKey           []byte
	SignedPrekeyID        uint32
	SignedPrekey          []byte
	SignedPrekeySignature []byte
}

// OneTimePrekey is one single-use public prekey of a device.
type OneTimePrekey struct {
	ID        uint32
	PublicKey []byte
}

// KeyStore is the key directory: per device, its keys and a pool of
// one-time prekeys that senders consume.
type KeyStore interface {
	// PutDeviceKeys replaces a device's keys and returns the identity key
	// it replaced (nil when the device had none).
	PutDeviceKeys(ctx context.Context, userID string, deviceID uint32, k DeviceKeys) (previousIdentity []byte, err error)
	// GetDeviceKeys returns ErrNotFound for a device that uploaded none.
	GetDeviceKeys(ctx context.Context, userID string, deviceID uint32) (DeviceKeys, error)
	// AddOneTimePrekeys adds to the pool; a prekey id already there is
	// replaced.
	AddOneTimePrekeys(ctx context.Context, userID string, deviceID uint32, keys []OneTimePrekey) error
	// TakeOneTimePrekey removes and returns one prekey of the pool (ok false
	// when it is empty). Concurrent takes, from any process, never return
	// the same prekey.
	TakeOneTimePrekey(ctx context.Context, userID string, deviceID uint32) (key OneTimePrekey, ok bool, err error)
	// CountOneTimePrekeys returns the pool's size.
	CountOneTimePrekeys(ctx context.Context, userID string, deviceID uint32) (int, error)
	// DeleteDeviceKeys removes a device's keys and pool (unlinking).
	DeleteDeviceKeys(ctx context.Context, userID string, deviceID uint32) error
}

// ProfileStore keeps what a User grain persists besides devices and
// inboxes (contacts, blocks, privacy, last seen, push tokens) as one opaque
// record per user, read on activation and replaced on change.
type ProfileStore interface {
	// GetProfile returns the user's record, or ErrNotFound when none was
	// stored.
	GetProfile(ctx context.Context, userID string) ([]byte, error)
	// PutProfile replaces the user's record.
	PutProfile(ctx context.Context, userID string, profile []byte) error
}

// SecretStore keeps small cluster-wide values that every node must agree
// on. Whatever is in a store is in its backups: token signing keys are not
// kept here (node/tokenkeys.go moves the one earlier versions kept out).
type SecretStore interface {
	// LoadOrStoreSecret stores candidate under name unless a value exists,
	// and returns the value that is stored.
	LoadOrStoreSecret(ctx context.Context, name string, candidate []byte) ([]byte, error)
	// LoadSecret returns the value stored under name, or ErrNotFound.
	LoadSecret(ctx context.Context, name string) ([]byte, error)
	// DeleteSecret removes name and its value; deleting a missing name is
	// no error. A LoadOrStoreSecret afterwards stores its candidate.
	DeleteSecret(ctx context.Context, name string) error
}
