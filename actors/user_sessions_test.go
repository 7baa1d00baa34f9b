package actors

import (
	"testing"

	"github.com/asynkron/protoactor-go/actor"
)

func TestDeviceSessions(t *testing.T) {
	a, b, c := actor.NewPID("n1", "session/a"), actor.NewPID("n1", "session/b"), actor.NewPID("n2", "session/a")
	type op func(*deviceSessions) bool
	set := func(dev uint32, pid *actor.PID) op {
		return func(d *deviceSessions) bool { d.set(dev, pid); return true }
	}
	remove := func(dev uint32) op { return func(d *deviceSessions) bool { return d.remove(dev) } }
	removePID := func(pid *actor.PID) op { return func(d *deviceSessions) bool { return d.removePID(pid) } }
	for _, tc := range []struct {
		name string
		ops  []op
		oks  []bool // what each op returned
		want map[uint32]*actor.PID
	}{
		{"empty", nil, nil, map[uint32]*actor.PID{}},
		{"two devices", []op{set(1, a), set(2, b)}, []bool{true, true}, map[uint32]*actor.PID{1: a, 2: b}},
		{"a newer session replaces the device's", []op{set(1, a), set(1, b)}, []bool{true, true}, map[uint32]*actor.PID{1: b}},
		{"remove one of three", []op{set(1, a), set(2, b), set(3, c), remove(1)}, []bool{true, true, true, true}, map[uint32]*actor.PID{2: b, 3: c}},
		{"remove an absent device", []op{set(1, a), remove(2)}, []bool{true, false}, map[uint32]*actor.PID{1: a}},
		{"removePID takes every device of the session", []op{set(1, a), set(2, b), set(3, a), removePID(a)}, []bool{true, true, true, true}, map[uint32]*actor.PID{2: b}},
		{"removePID compares address and id", []op{set(1, a), removePID(c)}, []bool{true, false}, map[uint32]*actor.PID{1: a}},
		{"removing the last device empties it", []op{set(1, a), remove(1)}, []bool{true, true}, map[uint32]*actor.PID{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d deviceSessions
			for i, o := range tc.ops {
				if got := o(&d); got != tc.oks[i] {
					t.Fatalf("op %d returned %v, want %v", i, got, tc.oks[i])
				}
			}
			if len(d) != len(tc.want) {
				t.Fatalf("%d devices attached, want %d: %v", len(d), len(tc.want), d)
			}
			for dev, pid := range tc.want {
				if got, ok := d.get(dev); !ok || !got.Equal(pid) {
					t.Fatalf("device %d: %v, %v; want %v", dev, got, ok, pid)
				}
			}
			if len(tc.want) == 0 && d != nil {
				t.Fatalf("empty set keeps its array: %v", d)
			}
		})
	}
}
