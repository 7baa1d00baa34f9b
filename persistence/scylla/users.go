package scylla

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gocql/gocql"

	"github.com/courier-im/courier/persistence"
)

// CreateUser implements persistence.UserStore. The handle is claimed with
// INSERT ... IF NOT EXISTS, then the user row is written. A CreateUser
// retried by a caller unsure whether its first attempt landed succeeds: the
// handle already belongs to the same user id, and the user row is written
// again (idempotently). When the user row cannot be written the claim is
// released again, so a failed registration does not keep the handle.
func (s *Store) CreateUser(ctx context.Context, u persistence.User) error {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: create user %q with handle %q: %w", u.ID, u.Handle, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()

	// Overwriting an existing user would orphan its handle claim.
	var existingHandle string
	var created time.Time
	err = s.query(ctx, s.stmts.getUser, u.ID).Scan(&existingHandle, &created)
	switch {
	case err == nil && existingHandle != u.Handle:
		return wrap(fmt.Errorf("user id already registered with handle %q", existingHandle))
	case err != nil && !errors.Is(err, gocql.ErrNotFound):
		return wrap(err)
	}

	current := map[string]any{}
	// The claim is on the folded handle (handles.go); the users row keeps
	// the spelling registered.
	applied, err := s.sess.Session.Query(s.stmts.claimHandle, persistence.HandleKey(u.Handle), u.ID).
		WithContext(ctx).MapScanCAS(current)
	if err != nil {
		// The outcome is unknown; the claim may have landed. A retry sorts
		// it out: it sees the handle as its own.
		return wrap(err)
	}
	if !applied {
		// A failed CAS returns the current row on both Cassandra and
		// ScyllaDB; only a successful one has no pre-image to read.
		if owner, _ := current["user_id"].(string); owner != u.ID {
			return wrap(persistence.ErrHandleTaken)
		}
	}
	err = s.query(ctx, s.stmts.insertUser, u.ID, u.Handle, u.CreatedAt.UTC()).Idempotent(true).Exec()
	if err != nil {
		s.unclaim(u)
		return wrap(err)
	}
	return nil
}

// unclaim releases a handle claim whose user row could not be written, on
// a fresh short context (the caller's may be what failed). If it fails too,
// the handle stays claimed by an id without a user, which only a retry of
// the same registration can finish.
func (s *Store) unclaim(u persistence.User) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*defaultTimeout)
	defer cancel()
	if _, err := s.sess.Session.Query(s.stmts.unclaimHandle, persistence.HandleKey(u.Handle), u.ID).WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		s.log.Warn("could not release the handle of a failed registration", "handle", u.Handle, "user_id", u.ID, "err", err)
	}
}

// GetUser implements persistence.UserStore.
func (s *Store) GetUser(ctx context.Context, userID string) (persistence.User, error) {
	wrap := func(err error) error { return fmt.Errorf("scylla: get user %q: %w", userID, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.User{}, wrap(err)
	}
	defer release()
	u, err := s.getUser(ctx, userID)
	if err != nil {
		return persistence.User{}, wrap(err)
	}
	return u, nil
}

func (s *Store) getUser(ctx context.Context, userID string) (persistence.User, error) {
	u := persistence.User{ID: userID}
	if err := s.query(ctx, s.stmts.getUser, userID).Scan(&u.Handle, &u.CreatedAt); err != nil {
		return persistence.User{}, err
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return u, nil
}

// GetUserByHandle implements persistence.UserStore: any spelling that
// folds alike finds the user. A handle whose user row is missing belongs
// to a registration that failed half-way: not found.
func (s *Store) GetUserByHandle(ctx context.Context, handle string) (persistence.User, error) {
	wrap := func(err error) error { return fmt.Errorf("scylla: get user by handle %q: %w", handle, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.User{}, wrap(err)
	}
	defer release()
	// An old handle of this exact spelling first (one whose folded key
	// another old handle may hold, handles.go), else the folded handle.
	var id string
	err = gocql.ErrNotFound
	if key := persistence.HandleKey(handle); key != handle {
		err = s.query(ctx, s.stmts.getHandle, handle).Scan(&id)
	}
	if errors.Is(err, gocql.ErrNotFound) {
		err = s.query(ctx, s.stmts.getHandle, persistence.HandleKey(handle)).Scan(&id)
	}
	if err != nil {
		return persistence.User{}, wrap(err)
	}
	u, err := s.getUser(ctx, id)
	if err != nil {
		return persistence.User{}, wrap(err)
	}
	return u, nil
}

// PutDevice implements persistence.UserStore.
func (s *Store) PutDevice(ctx context.Context, d persistence.Device) error {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: put device %q/%d: %w", d.UserID, d.DeviceID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	hash := d.SecretHash
	if hash == nil {
		hash = []byte{}
	}
	err = s.query(ctx, s.stmts.putDevice, d.UserID, int64(d.DeviceID), hash, d.CreatedAt.UTC()).Idempotent(true).Exec()
	if err != nil {
		return wrap(err)
	}
	return nil
}

// GetDevice implements persistence.UserStore.
func (s *Store) GetDevice(ctx context.Context, userID string, deviceID uint32) (persistence.Device, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: get device %q/%d: %w", userID, deviceID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.Device{}, wrap(err)
	}
	defer release()
	d := persistence.Device{UserID: userID, DeviceID: deviceID}
	if err := s.query(ctx, s.stmts.getDevice, userID, int64(deviceID)).Scan(&d.SecretHash, &d.CreatedAt); err != nil {
		return persistence.Device{}, wrap(err)
	}
	d.CreatedAt = d.CreatedAt.UTC()
	return d, nil
}

// ListDevices implements persistence.UserStore; the clustering order is
// device_id order.
func (s *Store) ListDevices(ctx context.Context, userID string) ([]persistence.Device, error) {
	wrap := func(err error) error { return fmt.Errorf("scylla: list devices of %q: %w", userID, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	var out []persistence.Device
	err = s.pages(ctx, s.query(ctx, s.stmts.listDevices, userID), 0, func(it *gocql.Iter) bool {
		var id int64
		d := persistence.Device{UserID: userID}
		if !it.Scan(&id, &d.SecretHash, &d.CreatedAt) {
			return false
		}
		d.DeviceID = uint32(id)
		d.CreatedAt = d.CreatedAt.UTC()
		out = append(out, d)
		return true
	})
	if err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// query builds an idempotent-by-default read or write with the caller's
// context.
func (s *Store) query(ctx context.Context, stmt string, args ...any) *gocql.Query {
	return s.sess.Session.Query(stmt, args...).WithContext(ctx).Idempotent(true)
}

// pages runs q page by page, following the page state until the database
// says there is no more. A short or even empty page is not the end: the
// database may cut a page early (tombstones, size limits), so only an empty
// page state ends the loop. row scans one row and reports whether it did;
// limit > 0 stops once that many rows were scanned.
func (s *Store) pages(ctx context.Context, q *gocql.Query, limit int, row func(*gocql.Iter) bool) error {
	size := pageSize
	if limit > 0 {
		size = min(limit, pageSize)
	}
	var state []byte
	n := 0
	for {
		it := q.PageSize(size).PageState(state).Iter()
		for (limit <= 0 || n < limit) && row(it) {
			n++
		}
		state = it.PageState()
		if err := it.Close(); err != nil {
			return err
		}
		if len(state) == 0 || (limit > 0 && n >= limit) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
