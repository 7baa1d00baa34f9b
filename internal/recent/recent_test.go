package recent

import "testing"

func TestMapEvictsOldestFirst(t *testing.T) {
	cases := []struct {
		name     string
		capacity int
		puts     []string
		want     []string // remembered afterwards
		gone     []string
	}{
		{"under capacity", 3, []string{"a", "b"}, []string{"a", "b"}, nil},
		{"evicts the oldest", 2, []string{"a", "b", "c"}, []string{"b", "c"}, []string{"a"}},
		{"update keeps age", 2, []string{"a", "b", "a", "c"}, []string{"b", "c"}, []string{"a"}},
		{"capacity below one is one", 0, []string{"a", "b"}, []string{"b"}, []string{"a"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := New[string, int](tc.capacity)
			for i, k := range tc.puts {
				m.Put(k, i)
			}
			for _, k := range tc.want {
				if _, ok := m.Get(k); !ok {
					t.Errorf("%q forgotten", k)
				}
			}
			for _, k := range tc.gone {
				if _, ok := m.Get(k); ok {
					t.Errorf("%q still remembered", k)
				}
			}
			if m.Len() != len(tc.want) {
				t.Errorf("Len %d, want %d", m.Len(), len(tc.want))
			}
		})
	}
}

func TestMapDeleteFreesTheKey(t *testing.T) {
	m := New[string, int](2)
	m.Put("a", 1)
	m.Delete("a")
	if _, ok := m.Get("a"); ok || m.Len() != 0 {
		t.Fatal("deleted key still there")
	}
	m.Put("a", 2)
	if v, _ := m.Get("a"); v != 2 {
		t.Fatalf("got %d after re-put", v)
	}
}
