package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuMeter measures the CPU time a run costs: this bench process's own
// (getrusage) and that of local server processes (/proc/<pid>/stat). CPU
// per message is what explains a throughput figure: on a machine the bench
// shares with the server, every microsecond the bench spends per message is
// one the server cannot.
type cpuMeter struct {
	pids   []int
	bench  time.Duration
	server time.Duration
	err    error
}

// userHZ is the unit of /proc/<pid>/stat times. The kernel reports them in
// USER_HZ, which is 100 on every Linux architecture Go supports.
const userHZ = 100

func startCPU(serverPIDs []int) *cpuMeter {
	m := &cpuMeter{pids: serverPIDs}
	m.bench, _ = selfCPU()
	m.server, m.err = serversCPU(serverPIDs)
	return m
}

// stop ends the measurement: call it when the traffic is over, before
// clients are closed, so teardown is not charged to the messages.
func (m *cpuMeter) stop() {
	b, err := selfCPU()
	if err != nil {
		b = m.bench // no figure rather than a wrong one
	}
	m.bench = b - m.bench
	if len(m.pids) == 0 || m.err != nil {
		return
	}
	s, err := serversCPU(m.pids)
	if err != nil {
		m.err = err
		return
	}
	m.server = s - m.server
}

// setCost fills the report's CPU per message over msgs messages, from a
// stopped meter. A server whose CPU could not be read leaves its figure out
// and says why.
func (r *Report) setCost(m *cpuMeter, msgs int64) {
	if msgs <= 0 {
		return
	}
	r.BenchCPUUsPerMsg = perMsgMicros(m.bench, msgs)
	if len(m.pids) == 0 {
		return
	}
	if m.err != nil {
		r.ServerCPUError = m.err.Error()
		return
	}
	r.ServerCPUUsPerMsg = perMsgMicros(m.server, msgs)
}

func perMsgMicros(d time.Duration, msgs int64) float64 {
	return float64(d.Microseconds()) / float64(msgs)
}

// serversCPU sums the user plus system time of the processes.
func serversCPU(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, fmt.Errorf("read server CPU (is pid %d a process on this machine?): %w", pid, err)
		}
		d, err := parseProcStatCPU(string(b))
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", pid, err)
		}
		sum += d
	}
	return sum, nil
}

// parseProcStatCPU reads utime and stime (fields 14 and 15) of a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may itself hold spaces and parentheses, so fields count from the last ')'.
func parseProcStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc stat: no command name in %.40q", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc stat: cpu time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}
