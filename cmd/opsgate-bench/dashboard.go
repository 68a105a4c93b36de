package main

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// recorder scrapes the server's /metrics every second during the run, so
// that the dashboard's main panels can be drawn from real data.
type recorder struct {
	url     string
	mu      sync.Mutex
	samples []scrapeAt
}

type scrapeAt struct {
	at   time.Time
	fams map[string]*dto.MetricFamily
}

func (r *recorder) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		resp, err := http.Get(r.url)
		if err != nil {
			continue
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err == nil {
			r.mu.Lock()
			r.samples = append(r.samples, scrapeAt{time.Now(), fams})
			r.mu.Unlock()
		}
	}
}

// sum adds the values of family name's series whose label key (if any)
// has each value, by that value ("" when key is "").
func sum(fams map[string]*dto.MetricFamily, name, key string) map[string]float64 {
	out := map[string]float64{}
	f := fams[name]
	if f == nil {
		return out
	}
	for _, m := range f.Metric {
		v := 0.0
		switch {
		case m.Counter != nil:
			v = m.Counter.GetValue()
		case m.Gauge != nil:
			v = m.Gauge.GetValue()
		case m.Histogram != nil:
			v = m.Histogram.GetSampleSum()
		}
		label := ""
		for _, l := range m.Label {
			if l.GetName() == key {
				label = l.GetValue()
			}
		}
		out[label] += v
	}
	return out
}

func histCount(fams map[string]*dto.MetricFamily, name string) float64 {
	n := 0.0
	if f := fams[name]; f != nil {
		for _, m := range f.Metric {
			n += float64(m.Histogram.GetSampleCount())
		}
	}
	return n
}

// panel is one chart: named series over the run's seconds.
type panel struct {
	Title, Unit string
	Series      map[string][]float64
}

// panels computes the dashboard's main panels from the samples: rates of
// counters, gauges as they were, and the mean pickup per interval.
func (r *recorder) panels() []panel {
	r.mu.Lock()
	s := r.samples
	r.mu.Unlock()
	rate := func(name, key string) map[string][]float64 {
		out := map[string][]float64{}
		for i := 1; i < len(s); i++ {
			dt := s[i].at.Sub(s[i-1].at).Seconds()
			prev, cur := sum(s[i-1].fams, name, key), sum(s[i].fams, name, key)
			for k, v := range cur {
				out[k] = append(out[k], max(0, (v-prev[k])/dt))
			}
		}
		return out
	}
	gauge := func(name, key string) map[string][]float64 {
		out := map[string][]float64{}
		for i := 1; i < len(s); i++ {
			for k, v := range sum(s[i].fams, name, key) {
				out[k] = append(out[k], v)
			}
		}
		return out
	}
	pickup := map[string][]float64{"mean": nil}
	for i := 1; i < len(s); i++ {
		dn := histCount(s[i].fams, "opsgate_run_pickup_seconds") - histCount(s[i-1].fams, "opsgate_run_pickup_seconds")
		ds := sum(s[i].fams, "opsgate_run_pickup_seconds", "")[""] - sum(s[i-1].fams, "opsgate_run_pickup_seconds", "")[""]
		v := 0.0
		if dn > 0 {
			v = ds / dn
		}
		pickup["mean"] = append(pickup["mean"], v)
	}
	return []panel{
		{"Starts by outcome", "per second", rate("opsgate_decisions_total", "outcome")},
		{"Queue depth", "runs", gauge("opsgate_queue_depth", "status")},
		{"Pickup: accepted to claimed (mean)", "seconds", pickup},
		{"Executors: claims", "per second", rate("opsgate_executor_claims_total", "executor")},
		{"Projector lag", "seconds", gauge("opsgate_projector_lag_seconds", "projector")},
		{"Database pool", "connections", gauge("opsgate_db_pool_connections", "state")},
	}
}

var dashboardPage = template.Must(template.New("d").Parse(`<!doctype html><html><head><meta charset="utf-8"><style>
body{margin:0;font:13px system-ui,sans-serif;background:#111217;color:#ccccdc}
h1{font-size:16px;margin:10px 16px}.grid{display:grid;grid-template-columns:1fr 1fr 1fr;gap:10px;padding:0 16px}
.p{background:#181b1f;border:1px solid #2c3235;border-radius:4px;padding:8px}
.p h2{font-size:13px;margin:0 0 4px}.legend span{margin-right:10px}svg{display:block}
</style></head><body><h1>opsgate · {{.Title}}</h1><div class="grid">{{range .Panels}}<div class="p"><h2>{{.Title}} <small>({{.Unit}})</small></h2>{{.SVG}}
<div class="legend">{{range .Legend}}<span style="color:{{.Color}}">■ {{.Name}}</span>{{end}}</div></div>{{end}}</div></body></html>`))

type legendItem struct{ Name, Color string }

// render draws the panels as SVG in one page and screenshots it with
// Chromium at 1280x800 into path.
func renderDashboard(title string, panels []panel, path string) error {
	colors := []string{"#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a"}
	type drawn struct {
		Title, Unit string
		SVG         template.HTML
		Legend      []legendItem
	}
	var out []drawn
	for _, p := range panels {
		const w, h = 380.0, 250.0
		names := make([]string, 0, len(p.Series))
		top := 0.0
		for k, vs := range p.Series {
			names = append(names, k)
			for _, v := range vs {
				top = max(top, v)
			}
		}
		sort.Strings(names)
		if top == 0 {
			top = 1
		}
		var b strings.Builder
		fmt.Fprintf(&b, `<svg width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`, w, h, w, h)
		for i := 0; i <= 4; i++ {
			y := 10 + (h-30)*float64(i)/4
			fmt.Fprintf(&b, `<line x1="56" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#2c3235"/><text x="52" y="%.1f" fill="#8e8e8e" font-size="10" text-anchor="end">%.4g</text>`,
				w, y, y, y+3, top*float64(4-i)/4)
		}
		d := drawn{Title: p.Title, Unit: p.Unit}
		for i, name := range names {
			vs := p.Series[name]
			color := colors[i%len(colors)]
			var pts []string
			for j, v := range vs {
				x := 56 + (w-61)*float64(j)/float64(max(1, len(vs)-1))
				y := 10 + (h-30)*(1-v/top)
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, color, strings.Join(pts, " "))
			label := name
			if label == "" {
				label = p.Title
			}
			d.Legend = append(d.Legend, legendItem{label, color})
		}
		fmt.Fprintf(&b, `<text x="56" y="%.0f" fill="#8e8e8e" font-size="10">run time, one point a second →</text></svg>`, h-5)
		d.SVG = template.HTML(b.String())
		out = append(out, d)
	}
	var page bytes.Buffer
	if err := dashboardPage.Execute(&page, map[string]any{"Title": title, "Panels": out}); err != nil {
		return err
	}
	html, err := os.CreateTemp("", "opsgate-dashboard-*.html")
	if err != nil {
		return err
	}
	defer os.Remove(html.Name())
	if _, err := html.Write(page.Bytes()); err != nil {
		return err
	}
	html.Close()
	exe, err := exec.LookPath("chromium")
	if err != nil {
		return fmt.Errorf("the dashboard screenshot needs Chromium (apt-get install -y chromium): %w", err)
	}
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.WindowSize(1280, 800))...)
	defer cancel()
	ctx, cancelCtx := chromedp.NewContext(alloc)
	defer cancelCtx()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate("file://"+html.Name())); err != nil {
		return err
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}
