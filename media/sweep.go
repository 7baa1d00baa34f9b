package media

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/courier-im/courier/persistence"
)

// sweepBatch is how many expired blobs one store call returns.
const sweepBatch = 256

// SweepResult counts what one Sweep deleted.
type SweepResult struct {
	Blobs   int // expired blobs, bytes and record
	Uploads int // unfinished uploads older than the TTL
}

func (s *Service) sweepLoop(ctx context.Context) {
	defer close(s.sweepDone)
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		res, err := s.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("media sweep failed", "err", err, "blobs", res.Blobs, "uploads", res.Uploads)
		case res.Blobs+res.Uploads > 0:
			s.log.Info("media sweep", "blobs", res.Blobs, "uploads", res.Uploads)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep deletes the blobs not referenced for a TTL (bytes first, then the
// record: M2) and the unfinished uploads created more than a TTL ago. The
// background sweeper calls it every SweepInterval; tests call it directly.
func (s *Service) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	if s.cfg.TTL <= 0 {
		return res, nil
	}
	cutoff := s.now().Add(-s.cfg.TTL)
	var errs []error
	for {
		blobs, err := s.store.ExpiredBlobs(ctx, cutoff, sweepBatch)
		if err != nil {
			errs = append(errs, err)
			break
		}
		deleted := 0
		for _, b := range blobs {
			ok, err := s.expire(ctx, b.Digest, cutoff)
			if err != nil {
				errs = append(errs, err)
			}
			if ok {
				deleted++
			}
		}
		res.Blobs += deleted
		// A short page is the last; a page of which nothing could be
		// deleted would come back the same.
		if len(blobs) < sweepBatch || deleted == 0 {
			break
		}
	}
	n, err := s.sweepUploads(ctx, cutoff)
	res.Uploads = n
	return res, errors.Join(append(errs, err)...)
}

// expire deletes one blob unless it was re-referenced since it was listed.
func (s *Service) expire(ctx context.Context, digest string, cutoff time.Time) (bool, error) {
	defer s.lockDigest(digest)()
	b, err := s.store.GetBlob(ctx, digest)
	if errors.Is(err, persistence.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !b.LastReferenced.Before(cutoff) {
		return false, nil
	}
	if err := s.blobs.Delete(ctx, digest); err != nil {
		return false, err
	}
	return true, s.store.DeleteBlob(ctx, digest)
}

// sweepUploads terminates the unfinished uploads created before cutoff. A
// PATCH still running on one is interrupted (the lock asks it to stop).
func (s *Service) sweepUploads(ctx context.Context, cutoff time.Time) (int, error) {
	ids, err := s.blobs.ListUploads(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		up, err := s.composer.Core.GetUpload(ctx, id)
		if err != nil {
			continue // finished or terminated meanwhile
		}
		info, err := up.GetInfo(ctx)
		if err != nil {
			continue
		}
		created, err := strconv.ParseInt(info.MetaData[metaCreated], 10, 64)
		if err == nil && !time.Unix(created, 0).Before(cutoff) {
			continue
		}
		lock, err := s.composer.Locker.NewLock(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = lock.Lock(lctx, func() {})
		cancel()
		if err != nil {
			continue // busy: the next sweep
		}
		if err := s.composer.Terminater.AsTerminatableUpload(up).Terminate(ctx); err != nil {
			errs = append(errs, err)
		} else {
			n++
		}
		_ = lock.Unlock()
	}
	return n, errors.Join(errs...)
}
