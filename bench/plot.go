package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WritePlot draws the report as a PNG: the latency CDF on top (the share
// of messages, or connections, at or below each latency; log scale) and
// the throughput over the run below (events a second per timeline step).
func WritePlot(r *Report, path string) error {
	cdf, err := cdfPlot(r)
	if err != nil {
		return err
	}
	tput, err := throughputPlot(r)
	if err != nil {
		return err
	}
	const width, height = 20 * vg.Centimeter, 22 * vg.Centimeter
	img := vgimg.New(width, height)
	dc := draw.New(img)
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Millimeter * 4, PadBottom: vg.Millimeter * 4,
		PadLeft: vg.Millimeter * 4, PadRight: vg.Millimeter * 6, PadY: vg.Millimeter * 8}
	plots := [][]*plot.Plot{{cdf}, {tput}}
	canvases := plot.Align(plots, tiles, dc)
	for i, row := range plots {
		for j, p := range row {
			p.Draw(canvases[i][j])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bench: plot %s: %w", path, err)
	}
	return nil
}

// cdfPoints turns the latency histogram into (ms, percent at or below).
func cdfPoints(r *Report) plotter.XYs {
	h := r.LatencyHistogram()
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	total := float64(h.TotalCount())
	var pts plotter.XYs
	var seen int64
	for _, b := range h.Distribution() {
		if b.Count == 0 {
			continue
		}
		seen += b.Count
		pts = append(pts, plotter.XY{X: max(float64(b.To)/1000, 0.001), Y: 100 * float64(seen) / total})
	}
	return pts
}

func cdfPlot(r *Report) (*plot.Plot, error) {
	p := plot.New()
	what := "latency"
	if r.LatencyOf != "" {
		what = r.LatencyOf
	}
	p.Title.Text = fmt.Sprintf("courier bench %s — %s\np50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms",
		r.Scenario, what, r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs)
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "at or below (%)"
	p.Y.Min, p.Y.Max = 0, 100
	p.Add(plotter.NewGrid())
	pts := cdfPoints(r)
	if len(pts) == 0 {
		p.X.Min, p.X.Max = 0.1, 1000
		p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{}
		return p, nil
	}
	p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	// Whole decades, so the axis always has labelled ticks at both ends.
	p.X.Min = math.Pow(10, math.Floor(math.Log10(pts[0].X)))
	p.X.Max = math.Pow(10, math.Ceil(math.Log10(max(pts[len(pts)-1].X, r.P999Ms))))
	if p.X.Max <= p.X.Min {
		p.X.Max = p.X.Min * 10
	}
	line, err := plotter.NewLine(pts)
	if err != nil {
		return nil, fmt.Errorf("bench: plot: %w", err)
	}
	line.Color = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	line.Width = vg.Points(1.5)
	p.Add(line)
	for _, q := range []struct {
		name string
		ms   float64
	}{{"p50", r.P50Ms}, {"p99", r.P99Ms}, {"p99.9", r.P999Ms}} {
		if q.ms <= 0 {
			continue
		}
		mark, err := plotter.NewLine(plotter.XYs{{X: q.ms, Y: 0}, {X: q.ms, Y: 100}})
		if err != nil {
			return nil, fmt.Errorf("bench: plot: %w", err)
		}
		mark.Color = color.RGBA{R: 214, G: 39, B: 40, A: 255}
		mark.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
		p.Add(mark)
		p.Legend.Add(fmt.Sprintf("%s %.2f ms", q.name, q.ms), mark)
	}
	p.Legend.Add("CDF", line)
	// Top left stays clear: a CDF is low on the left.
	p.Legend.Left, p.Legend.Top = true, true
	p.Legend.XOffs, p.Legend.YOffs = vg.Millimeter*2, -vg.Millimeter*2
	return p, nil
}

func throughputPlot(r *Report) (*plot.Plot, error) {
	p := plot.New()
	of := r.Timeline.Of
	if of == "" {
		of = "events"
	}
	p.Title.Text = fmt.Sprintf("throughput: %s a second (%.1f s steps)", of, r.Timeline.StepSec)
	p.X.Label.Text = "time since the measured phase began (s)"
	p.Y.Label.Text = strings.TrimSpace(of + " / s")
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	if r.Timeline.StepSec <= 0 || len(r.Timeline.Counts) == 0 {
		return p, nil
	}
	pts := make(plotter.XYs, 0, 2*len(r.Timeline.Counts))
	for i, n := range r.Timeline.Counts {
		rate := float64(n) / r.Timeline.StepSec
		// A step line: flat over each step.
		pts = append(pts, plotter.XY{X: float64(i) * r.Timeline.StepSec, Y: rate}, plotter.XY{X: float64(i+1) * r.Timeline.StepSec, Y: rate})
	}
	line, err := plotter.NewLine(pts)
	if err != nil {
		return nil, fmt.Errorf("bench: plot: %w", err)
	}
	line.Color = color.RGBA{R: 44, G: 160, B: 44, A: 255}
	line.Width = vg.Points(1)
	p.Add(line)
	if r.Mode == "open-loop" && r.Rate > 0 && of == "deliveries" && r.Scenario == "direct" {
		target, err := plotter.NewLine(plotter.XYs{{X: 0, Y: r.Rate}, {X: float64(len(r.Timeline.Counts)) * r.Timeline.StepSec, Y: r.Rate}})
		if err != nil {
			return nil, fmt.Errorf("bench: plot: %w", err)
		}
		target.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		target.Color = color.Gray{Y: 100}
		p.Add(target)
		p.Legend.Add(fmt.Sprintf("target %.0f/s", r.Rate), target)
		p.Legend.Top = false
	}
	return p, nil
}
