package e2ee

import (
	"fmt"
	"slices"
)

// A sender key reaches a member only over a pairwise session, and a member
// with no published keys has none: the distribution skips it. The device
// remembers whom its current sender key of a group has not reached, in the
// key file so a later process remembers too, and the sender hands it over
// before its next message of that epoch once those members have keys
// (within an epoch the membership does not change: every change starts a
// new epoch).

// groupEpoch names one epoch of one group.
type groupEpoch struct {
	group string
	epoch uint64
}

// Undistributed returns the users that this device's sender key for
// (groupID, epoch) has not reached yet, as last recorded by
// SetUndistributed.
func (d *Device) Undistributed(groupID string, epoch uint64) ([]string, error) {
	var out []string
	err := d.view(func(st *state) error {
		out = slices.Clone(st.undistributed[groupEpoch{groupID, epoch}])
		return nil
	})
	return out, err
}

// SetUndistributed records the users that this device's sender key for
// (groupID, epoch) has not reached; an empty list clears the record. A
// record for an older epoch of the group is dropped: a sender only ever
// distributes its current epoch's key.
func (d *Device) SetUndistributed(groupID string, epoch uint64, userIDs []string) error {
	err := d.update(func(tx *txn) error {
		if err := checkGroup(groupID); err != nil {
			return err
		}
		cur := tx.st.undistributed[groupEpoch{groupID, epoch}]
		want := slices.Compact(slices.Sorted(slices.Values(userIDs)))
		stale := false
		for k := range tx.st.undistributed {
			if k.group == groupID && k.epoch != epoch {
				stale = true
			}
		}
		if slices.Equal(cur, want) && !stale {
			return nil
		}
		m := make(map[groupEpoch][]string, len(tx.st.undistributed)+1)
		for k, v := range tx.st.undistributed {
			if k.group != groupID {
				m[k] = v
			}
		}
		if len(want) > 0 {
			m[groupEpoch{groupID, epoch}] = want
		}
		tx.st.undistributed = m
		tx.dirty = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("e2ee: record undistributed sender key %s/%d: %w", groupID, epoch, err)
	}
	return nil
}
