// Package phpkit_test runs the PHP kit's tests (clients/php/tests) against
// a real opsgate: it starts the application with the repository's test
// kit, creates the fixture the PHP tests need, and runs Debian's phpunit
// with the fixture in environment variables. The directory holds no Go
// code besides this test.
package phpkit_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/internal/app"
	"github.com/opsgate/opsgate/internal/apptest"
	"github.com/opsgate/opsgate/internal/config"
)

// phpunitTimeout bounds the whole PHP suite; it takes a few seconds.
const phpunitTimeout = 2 * time.Minute

// The executor scenarios of the PHP tests: each has an executor of a
// provider of its own and a connection of that provider, so that no
// scenario's runner can claim another's run.
var scenarios = []string{"SUCCEED", "FAIL", "LEASE", "CONCURRENT", "SIGTERM", "IDLE", "DEMO"}

func TestPHPKit(t *testing.T) {
	php, errPHP := exec.LookPath("php")
	phpunit, errUnit := exec.LookPath("phpunit")
	if errPHP != nil || errUnit != nil {
		t.Skip("php or phpunit not installed: apt-get install -y php-cli phpunit")
	}
	if out, err := exec.Command(php, "-r", `exit(function_exists("pcntl_fork") && function_exists("posix_kill") ? 0 : 1);`).CombinedOutput(); err != nil {
		t.Skipf("php lacks the pcntl or posix extension (Debian's php-cli has both): %v %s", err, out)
	}
	t.Parallel()

	// The main application: API and projectors. Its runs of the provider
	// "pclient" count as the built-in worker's (so they are accepted) but
	// no worker runs here, so they stay queued: the client tests' starts
	// are deduped against them. Runs of the php-* providers go to the
	// executors below, which the PHP runner drives. A start with limits
	// max_duration_s=1 times out a second after its claim: how the lease
	// test makes a heartbeat answer 409.
	a := apptest.Start(t, apptest.Roles(app.Roles{API: true, Projector: true}), apptest.Providers("pclient"))
	// A second process on the same database with a tiny rate limit (1
	// request a second, bursts of 1), for Retry-After on 429, and the
	// worker role, whose dispatcher sends webhook messages.
	limited := apptest.Start(t, apptest.OnDatabase(a.DatabaseURL), apptest.Roles(app.Roles{API: true, Worker: true}),
		apptest.Configure(func(c *config.Config) { c.RateLimit, c.RateBurst = 1, 1 }))

	ws := a.Workspace(t, "PHP kit")
	tenant := a.Tenant(t, ws.ID, "Contoso")
	owner := a.Member(t, "owner", tenant.ID, domain.RoleOwner)
	operator := a.Member(t, "operator", tenant.ID, domain.RoleOperator)
	rater := a.Member(t, "rate limited", tenant.ID, domain.RoleOperator)
	platform, err := a.Tenancy.CreateIntegration(a.Ctx, apptest.Admin, ws.ID, "Platform")
	if err != nil || platform.Token == nil {
		t.Fatalf("create an integration: %v", err)
	}
	conn := func(name, provider string, opts ...apptest.ConnectionOption) string {
		return a.Connection(t, owner.ID, tenant.ID, name, append([]apptest.ConnectionOption{apptest.Provider(provider)}, opts...)...).ID
	}
	env := map[string]string{
		"OPSGATE_URL":               a.URL,
		"OPSGATE_RATE_LIMITED_URL":  limited.URL,
		"OPSGATE_ADMIN_TOKEN":       apptest.AdminToken,
		"OPSGATE_TENANT_ID":         tenant.ID,
		"OPSGATE_OPERATOR_ID":       operator.ID,
		"OPSGATE_OPERATOR_TOKEN":    operator.Token,
		"OPSGATE_RATE_USER_TOKEN":   rater.Token,
		"OPSGATE_INTEGRATION_ID":    platform.ID,
		"OPSGATE_INTEGRATION_TOKEN": platform.Token.Value,
		"OPSGATE_CONN_DEDUPE":       conn("dedupe", "pclient"),
		"OPSGATE_CONN_ON_BEHALF":    conn("on behalf", "pclient"),
		"OPSGATE_CONN_RATE":         conn("rate", "pclient"),
		"OPSGATE_CONN_BLOCKED":      conn("no consent", "pclient", apptest.Consent(domain.ConsentMissing)),
		"OPSGATE_CONN_NO_EXECUTOR":  conn("nobody runs it", "php-nobody"),
		"OPSGATE_WEBHOOK_WORKSPACE": a.Workspace(t, "PHP webhooks").ID,
		"OPSGATE_PHPUNIT_TEMP":      t.TempDir(),
	}
	if keep := os.Getenv("OPSGATE_PHPUNIT_KEEP"); keep != "" {
		// Keep the processes' logs and files for a look after the test.
		env["OPSGATE_PHPUNIT_TEMP"] = keep
	}
	for _, s := range scenarios {
		provider := "php-" + strings.ToLower(s)
		ex, err := a.Executors.Register(a.Ctx, apptest.Admin, "PHP "+strings.ToLower(s), []string{provider}, nil)
		if err != nil {
			t.Fatalf("register the %s executor: %v", s, err)
		}
		env["OPSGATE_EXEC_"+s+"_PROVIDER"] = provider
		env["OPSGATE_EXEC_"+s+"_TOKEN"] = ex.Token
		env["OPSGATE_EXEC_"+s+"_CONN"] = conn(strings.ToLower(s), provider)
		if s == "CONCURRENT" {
			env["OPSGATE_EXEC_"+s+"_CONN2"] = conn(strings.ToLower(s)+" 2", provider)
		}
	}

	dir, err := os.Getwd() // the package directory: clients/php
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), phpunitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, phpunit, "--configuration", filepath.Join(dir, "phpunit.xml.dist"), "--colors=never", "--testdox")
	cmd.Dir = dir
	cmd.Env = os.Environ()
	names := make([]string, 0, len(env))
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
		names = append(names, k)
	}
	sort.Strings(names)
	began := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("phpunit failed after %v: %v (fixture variables: %s)\n%s", time.Since(began).Round(time.Millisecond), err, strings.Join(names, " "), out)
	}
	// With a skipped or incomplete test, phpunit's verdict is "OK, but ...".
	if !strings.Contains(string(out), "\nOK (") {
		t.Fatalf("phpunit did not pass every test (skipped or risky ones included):\n%s", out)
	}
	t.Logf("phpunit passed in %v:\n%s", time.Since(began).Round(time.Millisecond), out)
}
