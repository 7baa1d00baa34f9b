package bench

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseProcStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr string
	}{
		{
			name: "plain command",
			stat: "4242 (courier) S 1 4242 4242 0 -1 4194560 5000 0 0 0 1234 566 0 0 20 0 12 0 100 1000 300 18446744073709551615",
			want: 18 * time.Second, // (1234 + 566) ticks at 100 Hz
		},
		{
			name: "command with spaces and parentheses",
			stat: "7 (a (b) c)) R 1 7 7 0 -1 0 0 0 0 0 250 50 0 0 20 0",
			want: 3 * time.Second,
		},
		{name: "no command", stat: "7 R 1", wantErr: "no command name"},
		{name: "truncated", stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 250", wantErr: "fields after the command name"},
		{name: "not a number", stat: "7 (x) R 1 7 7 0 -1 0 0 0 0 0 lots 50 0", wantErr: `cpu time "lots"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStatCPU(tc.stat)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// burn spends d of CPU time in this process, however busy the machine is.
func burn(t *testing.T, d time.Duration) {
	start, err := selfCPU()
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for now := start; now-start < d; now, _ = selfCPU() {
		for i := range 10000 {
			x += i
		}
	}
	_ = x
}

func TestCostPerMessageCountsTheServersCPU(t *testing.T) {
	m := startCPU([]int{os.Getpid()})
	burn(t, 200*time.Millisecond)
	m.stop()
	var r Report
	r.setCost(m, 1000)
	// 200 ms over 1,000 messages is 200 µs each; /proc counts in 10 ms ticks.
	if r.ServerCPUUsPerMsg < 150 || r.BenchCPUUsPerMsg < 150 || r.ServerCPUError != "" {
		t.Fatalf("bench %.1f µs/msg, server %.1f µs/msg (%q); want about 200 each", r.BenchCPUUsPerMsg, r.ServerCPUUsPerMsg, r.ServerCPUError)
	}
}

func TestCostOfAServerThatIsNotHereSaysWhy(t *testing.T) {
	m := startCPU([]int{1 << 30}) // above any pid_max
	m.stop()
	var r Report
	r.setCost(m, 10)
	if r.ServerCPUUsPerMsg != 0 || !strings.Contains(r.ServerCPUError, "is pid 1073741824 a process on this machine") {
		t.Fatalf("server %.1f µs/msg, error %q", r.ServerCPUUsPerMsg, r.ServerCPUError)
	}
	var text strings.Builder
	_ = r.WriteText(&text)
	if !strings.Contains(text.String(), "server unknown") {
		t.Fatalf("the summary hides the missing figure:\n%s", text.String())
	}
}
