package e2ee

import (
	"slices"
	"testing"
)

// TestUndistributedSurvivesReopenAndFollowsTheEpoch: the record of whom a
// sender key has not reached is kept in the key file (a later process
// distributes it), and only for the group's current epoch.
func TestUndistributedSurvivesReopenAndFollowsTheEpoch(t *testing.T) {
	d, path := openDevice(t, t.TempDir(), "alice", 1)
	get := func(d *Device, group string, epoch uint64) []string {
		t.Helper()
		u, err := d.Undistributed(group, epoch)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	steps := []struct {
		name  string
		group string
		epoch uint64
		users []string
		want  map[string][]string // "group/epoch" -> users after the step
	}{
		{"record two, unsorted with a duplicate", "g1", 1, []string{"hana", "bob", "hana"},
			map[string][]string{"g1/1": {"bob", "hana"}}},
		{"another group is independent", "g2", 4, []string{"carol"},
			map[string][]string{"g1/1": {"bob", "hana"}, "g2/4": {"carol"}}},
		{"a new epoch replaces the old one's record", "g1", 2, []string{"hana"},
			map[string][]string{"g1/1": nil, "g1/2": {"hana"}, "g2/4": {"carol"}}},
		{"an empty list clears", "g1", 2, nil,
			map[string][]string{"g1/2": nil, "g2/4": {"carol"}}},
	}
	keys := map[string]struct {
		g string
		e uint64
	}{"g1/1": {"g1", 1}, "g1/2": {"g1", 2}, "g2/4": {"g2", 4}}
	for _, st := range steps {
		if err := d.SetUndistributed(st.group, st.epoch, st.users); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		d = reopen(t, d, path)
		for k, want := range st.want {
			if got := get(d, keys[k].g, keys[k].e); !slices.Equal(got, want) {
				t.Errorf("%s: after reopen %s = %v, want %v", st.name, k, got, want)
			}
		}
	}
	if err := d.SetUndistributed("", 1, []string{"x"}); err == nil {
		t.Error("SetUndistributed accepted an empty group id")
	}
}
