package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// workerHandle is the coordinator's end of one worker.
type workerHandle struct {
	in   io.Closer
	lw   *lineWriter
	kill func()
	wait func()
}

// send writes one command; a worker that is gone ignores it (its exit
// shows up as the end of its output).
func (h *workerHandle) send(cmd string) { _ = h.lw.send(workerCmd{Cmd: cmd}) }

func (h *workerHandle) closeInput() { _ = h.in.Close() }

// start launches one worker, hands it its configuration and follows its
// output on a goroutine that ends with that output.
func (p *workerPool) start(ctx context.Context, cfg ConnsConfig, wc workerConfig) error {
	var h *workerHandle
	var out io.Reader
	var err error
	if cfg.Exec == nil {
		h, out = startInProcess(ctx, wc.Index)
	} else if h, out, err = startProcess(cfg, wc.Index); err != nil {
		return err
	}
	if err := h.lw.send(wc); err != nil {
		h.kill()
		h.closeInput()
		h.wait()
		return fmt.Errorf("bench: configure worker %d: %w", wc.Index, err)
	}
	p.mu.Lock()
	index := len(p.states)
	p.states = append(p.states, &workerState{})
	p.mu.Unlock()
	p.handles = append(p.handles, h)
	go p.read(index, out)
	return nil
}

// read forwards a worker's events until its output ends.
func (p *workerPool) read(index int, out io.Reader) {
	sc := newLineScanner(out)
	for sc.Scan() {
		var ev workerEvent
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			p.events <- indexedEvent{index: index, ev: ev}
		}
	}
	p.events <- indexedEvent{index: index, eof: true}
}

// startInProcess runs ConnsWorker on a goroutine over pipes.
func startInProcess(ctx context.Context, index int) (*workerHandle, io.Reader) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := ConnsWorker(ctx, inR, outW)
		_ = inR.CloseWithError(fmt.Errorf("worker %d ended: %v", index, err))
		_ = outW.Close()
	}()
	return &workerHandle{in: inW, lw: newLineWriter(inW), kill: cancel, wait: func() { <-done; cancel() }}, outR
}

// startProcess runs cfg.Exec as a worker process.
func startProcess(cfg ConnsConfig, index int) (*workerHandle, io.Reader, error) {
	cmd := exec.Command(cfg.Exec[0], cfg.Exec[1:]...)
	cmd.Env = append(os.Environ(), cfg.ExecEnv...)
	cmd.Stderr = cfg.WorkerStderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("bench: worker %d: %w", index, err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("bench: worker %d: %w", index, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("bench: start worker %d (%s): %w", index, cfg.Exec[0], err)
	}
	h := &workerHandle{in: in, lw: newLineWriter(in),
		kill: func() { _ = cmd.Process.Kill() },
		wait: func() { _ = cmd.Wait() },
	}
	return h, out, nil
}
