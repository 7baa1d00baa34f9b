package bench

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWritePlot(t *testing.T) {
	rec := newRecorder(time.Now())
	for i := range 2000 {
		at := rec.start.Add(time.Duration(i) * time.Millisecond)
		rec.record(i, at, time.Duration(500+i*10)*time.Microsecond)
	}
	h, tl := rec.result()
	tests := []struct {
		name string
		r    *Report
	}{
		{"open loop", &Report{Scenario: "direct", Mode: "open-loop", Rate: 1000, LatencyOf: "scheduled send to receive"}},
		{"no data", &Report{Scenario: "conns"}},
	}
	tests[0].r.setLatency(h)
	tests[0].r.setTimeline("deliveries", tl)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "out.png")
			if err := WritePlot(tt.r, path); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			img, err := png.Decode(f)
			if err != nil {
				t.Fatalf("not a PNG: %v", err)
			}
			if b := img.Bounds(); b.Dx() < 400 || b.Dy() < 400 {
				t.Fatalf("plot is %v", b)
			}
		})
	}
	pts := cdfPoints(tests[0].r)
	if len(pts) == 0 || pts[len(pts)-1].Y != 100 || pts[0].X < 0.5 {
		t.Fatalf("CDF points: first %+v, last %+v", pts[0], pts[len(pts)-1])
	}
	if err := WritePlot(tests[0].r, filepath.Join(t.TempDir(), "missing", "out.png")); err == nil {
		t.Fatal("a plot into a missing directory succeeded")
	}
}
