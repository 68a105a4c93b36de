package deploy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/apptest"
)

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed: these checks are skipped (Debian: apt-get install -y prometheus)")
	}
	return p
}

func run(t *testing.T, dir string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func TestAlertRules(t *testing.T) {
	p := promtool(t)
	run(t, "prometheus", p, "check", "rules", "alerts.yml")
	run(t, "prometheus", p, "test", "rules", "alerts_test.yml")
}

// scrape starts the application, makes it decide and run a start, and
// returns its /metrics.
func scrape(t *testing.T) string {
	t.Helper()
	a := apptest.Start(t)
	ws := a.Workspace(t, "Northwind MSP")
	tenant := a.Tenant(t, ws.ID, "Contoso").ID
	owner := a.Member(t, "Ana", tenant, domain.RoleOwner)
	conn := a.Connection(t, owner.ID, tenant, "Graph", apptest.AsDefault).ID
	slow := a.Connection(t, owner.ID, tenant, "Slow", apptest.Latency(60_000)).ID
	blocked := a.Connection(t, owner.ID, tenant, "No consent", apptest.Consent(domain.ConsentMissing)).ID
	var first apptest.StartResult
	a.Must(t, 202, "POST", "/api/v1/provider-connections/"+conn+"/inventory-sync", owner.Token, nil, &first)
	a.Must(t, 422, "POST", "/api/v1/provider-connections/"+blocked+"/inventory-sync", owner.Token, nil, nil)
	a.Must(t, 202, "POST", "/api/v1/provider-connections/"+slow+"/inventory-sync", owner.Token, nil, nil) // a busy scope
	// A run that its provider's only executor never claims: it ends not
	// picked up after its one-second claim deadline.
	var ex struct {
		Token string `json:"token"`
	}
	a.Must(t, 201, "POST", "/api/v1/admin/executors", apptest.AdminToken, map[string]any{"name": "jobs", "providers": []string{"acme"}}, &ex)
	a.Must(t, 200, "POST", "/api/v1/executor/claims", ex.Token, map[string]any{"max": 1, "wait_ms": 0}, nil) // live
	acme := a.Connection(t, owner.ID, tenant, "Acme", apptest.Provider("acme")).ID
	a.Must(t, 202, "POST", "/api/v1/provider-connections/"+acme+"/inventory-sync", owner.Token, map[string]any{"limits": map[string]any{"queue_ttl_s": 1}}, nil)
	// A webhook endpoint that receives every change: its attempts are
	// counted and timed.
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(receiver.Close)
	a.Must(t, 201, "POST", "/api/v1/admin/webhooks", apptest.AdminToken, map[string]any{"workspace_id": ws.ID, "url": receiver.URL}, nil)
	// The tenant's verify goes to its default connection, once the sync
	// there has ended.
	apptest.WaitFor(t, 30*time.Second, "the first sync to end", func() bool {
		var run apptest.Run
		a.Must(t, 200, "GET", "/api/v1/operations/"+first.Run.ID+"?wait_ms=5000", owner.Token, nil, &run)
		return run.FinishedAt != nil
	})
	a.Must(t, 202, "POST", "/api/v1/tenants/"+tenant+"/verify", owner.Token, nil, nil)
	var body string
	apptest.WaitFor(t, 30*time.Second, "the run to be timed", func() bool {
		resp, err := http.Get(a.URL + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, "opsgate_run_duration_seconds_count") && strings.Contains(body, `opsgate_feed_batches_total{result="ok"}`) &&
			strings.Contains(body, "opsgate_scopes_busy{") && strings.Contains(body, `opsgate_runs_deadline_total{deadline="claim_by",provider="acme"}`) &&
			strings.Contains(body, `opsgate_webhook_deliveries_total{`)
	})
	return body
}

// TestMetricsLint: promtool check metrics finds nothing in a live scrape.
func TestMetricsLint(t *testing.T) {
	p := promtool(t)
	body := scrape(t)
	cmd := exec.Command(p, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

var metricName = regexp.MustCompile(`\bopsgate_[a-z_]+`)

// TestDashboardAndRulesNameLiveMetrics: every metric the dashboard and the
// alert rules query is one a live opsgate exports, and every family the
// README's Monitoring section names is too.
func TestDashboardAndRulesNameLiveMetrics(t *testing.T) {
	body := scrape(t)
	exported := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name := strings.Fields(rest)[0]
			for _, suffix := range []string{"", "_bucket", "_count", "_sum"} {
				exported[name+suffix] = true
			}
		}
	}
	raw, err := os.ReadFile("grafana/opsgate.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			for _, name := range metricName.FindAllString(target.Expr, -1) {
				if !exported[name] {
					t.Errorf("panel %q queries %s, which opsgate does not export", p.Title, name)
				}
			}
		}
	}
	rules, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range metricName.FindAllString(string(rules), -1) {
		if !exported[name] {
			t.Errorf("the alert rules query %s, which opsgate does not export", name)
		}
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if _, section, ok := strings.Cut(string(readme), "## Monitoring"); !ok {
		t.Error("the README has no Monitoring section")
	} else {
		section, _, _ = strings.Cut(section, "\n## ")
		for _, name := range metricName.FindAllString(section, -1) {
			if !exported[name] && !strings.HasSuffix(name, "_") {
				t.Errorf("the README names %s, which opsgate does not export", name)
			}
		}
	}
}
