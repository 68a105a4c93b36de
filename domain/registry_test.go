package domain_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/opsgate/opsgate/domain"
)

// Contract section 4, spelled out as strings so that a renamed constant
// cannot silently change the contract.
var contractRoles = map[string][]string{
	"owner": {
		"operations.view", "tenant.verify", "provider_connection.check", "provider_connection.manage",
		"inventory.sync", "compliance.snapshot", "directory.groups.sync", "directory.role_definitions.sync",
		"onboarding.run", "restore.execute", "audit.read",
	},
	"operator": {
		"operations.view", "tenant.verify", "provider_connection.check", "inventory.sync",
		"compliance.snapshot", "directory.groups.sync", "directory.role_definitions.sync", "onboarding.run",
	},
	"auditor":  {"operations.view", "audit.read"},
	"readonly": {"operations.view"},
}

func sortedStrings[T ~string](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = string(x)
	}
	slices.Sort(out)
	return out
}

func TestRoleCapabilitiesMatchTheContract(t *testing.T) {
	var roles []string
	for _, r := range domain.Roles() {
		roles = append(roles, string(r))
	}
	slices.Sort(roles)
	if want := []string{"auditor", "operator", "owner", "readonly"}; !slices.Equal(roles, want) {
		t.Fatalf("Roles() = %v, want %v", roles, want)
	}
	allCaps := contractRoles["owner"]
	for name, want := range contractRoles {
		role, ok := domain.ParseRole(name)
		if !ok {
			t.Fatalf("ParseRole(%q) failed", name)
		}
		got := sortedStrings(role.Capabilities())
		wantSorted := slices.Clone(want)
		slices.Sort(wantSorted)
		if !slices.Equal(got, wantSorted) {
			t.Errorf("%s capabilities\n  got  %v\n  want %v", name, got, wantSorted)
		}
		for _, c := range allCaps {
			if got, want := role.Can(domain.Capability(c)), slices.Contains(want, c); got != want {
				t.Errorf("%s.Can(%s) = %v, want %v", name, c, got, want)
			}
		}
		if role.Can("") || role.Can("operations.delete") {
			t.Errorf("%s grants a capability that does not exist", name)
		}
	}
}

func TestExclusiveCapabilities(t *testing.T) {
	holders := func(c domain.Capability) []string {
		var out []string
		for _, r := range domain.Roles() {
			if r.Can(c) {
				out = append(out, string(r))
			}
		}
		slices.Sort(out)
		return out
	}
	for c, want := range map[domain.Capability][]string{
		"restore.execute":            {"owner"},
		"provider_connection.manage": {"owner"},
		"audit.read":                 {"auditor", "owner"},
		"operations.view":            {"auditor", "operator", "owner", "readonly"},
	} {
		if got := holders(c); !slices.Equal(got, want) {
			t.Errorf("%s is granted to %v, want %v", c, got, want)
		}
	}
}

func TestParseRoleRejectsUnknownRoles(t *testing.T) {
	for _, s := range []string{"", "admin", "Owner", "OWNER", " owner", "owner "} {
		if _, ok := domain.ParseRole(s); ok {
			t.Errorf("ParseRole(%q) accepted", s)
		}
	}
	if caps := domain.Role("admin").Capabilities(); len(caps) != 0 {
		t.Errorf("an unknown role grants %v", caps)
	}
}

func TestCapabilitiesIsACopy(t *testing.T) {
	caps := domain.RoleReadonly.Capabilities()
	caps[0] = domain.CapRestoreExecute
	if domain.RoleReadonly.Can(domain.CapRestoreExecute) {
		t.Fatal("changing the returned slice changed the registry")
	}
}

// Contract section 3: write-time type, canonical type, capability of the
// operation itself (what cancelling needs) and whether it has a target.
var contractOperations = []struct {
	typ, canonical, label, capability, target string
}{
	{"provider.connection.check", "provider.connection.check", "Provider connection check", "provider_connection.check", ""},
	{"entra_group_sync", "directory.groups.sync", "Directory groups sync", "directory.groups.sync", ""},
	{"directory_role_definitions.sync", "directory.role_definitions.sync", "Role definitions sync", "directory.role_definitions.sync", ""},
	{"restore.execute", "restore.execute", "Restore execution", "restore.execute", "restore_run_id"},
	{"inventory.sync", "inventory.sync", "Inventory sync", "inventory.sync", ""},
	{"compliance.snapshot", "compliance.snapshot", "Compliance snapshot", "compliance.snapshot", ""},
}

func TestOperationsMatchTheContract(t *testing.T) {
	if got := len(domain.Operations()); got != len(contractOperations) {
		t.Fatalf("%d operations registered, contract has %d", got, len(contractOperations))
	}
	labels := map[string]bool{}
	for _, want := range contractOperations {
		for _, name := range []string{want.typ, want.canonical} {
			op, ok := domain.LookupOperation(name)
			if !ok {
				t.Errorf("LookupOperation(%q) failed", name)
				continue
			}
			if op.Type != want.typ || op.Canonical != want.canonical || op.Label != want.label ||
				string(op.Capability) != want.capability || op.TargetKey != want.target {
				t.Errorf("LookupOperation(%q) = %+v, want %+v", name, op, want)
			}
			if op.Destructive != (want.typ == "restore.execute") {
				t.Errorf("%s: destructive = %v", name, op.Destructive)
			}
			needsPreview := slices.Contains(op.Prerequisites, domain.NeedsRestorePreview)
			if needsPreview != (want.typ == "restore.execute") {
				t.Errorf("%s: needs restore preview = %v", name, needsPreview)
			}
			for _, p := range []domain.Prerequisite{domain.NeedsConnectionEnabled, domain.NeedsConsent, domain.NeedsValidCredentials} {
				if !slices.Contains(op.Prerequisites, p) {
					t.Errorf("%s does not check %s", name, p)
				}
			}
			if domain.MustOperation(name).Type != want.typ {
				t.Errorf("MustOperation(%q) differs", name)
			}
		}
		if labels[want.label] {
			t.Errorf("label %q is used twice", want.label)
		}
		labels[want.label] = true
	}
	for _, name := range []string{"", "inventory", "Inventory.Sync", "entra_group_sync ", "directory.groups", "start.deduped"} {
		if op, ok := domain.LookupOperation(name); ok {
			t.Errorf("LookupOperation(%q) found %+v", name, op)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("MustOperation of an unknown type did not panic")
			}
		}()
		domain.MustOperation("nope")
	}()
}

func TestOperationsIsACopy(t *testing.T) {
	ops := domain.Operations()
	ops[0].Label = "changed"
	if domain.Operations()[0].Label == "changed" {
		t.Fatal("changing the returned slice changed the registry")
	}
}

func TestBootstrapOperations(t *testing.T) {
	var got []string
	for _, op := range domain.BootstrapOperations() {
		got = append(got, op.Type)
	}
	slices.Sort(got)
	want := []string{"compliance.snapshot", "directory_role_definitions.sync", "entra_group_sync",
		"inventory.sync", "provider.connection.check"}
	if !slices.Equal(got, want) {
		t.Fatalf("bootstrap operations %v, want %v (every untargeted operation)", got, want)
	}
}

// Contract section 3's surface table: write-time type started ("" for the
// bootstrap, where the operator selects), capability, what the path names.
var contractSurfaces = []struct {
	name, typ, capability, scope string
}{
	{"tenant_verification", "provider.connection.check", "tenant.verify", "tenant"},
	{"directory_groups_sync", "entra_group_sync", "directory.groups.sync", "tenant"},
	{"role_definitions_sync", "directory_role_definitions.sync", "directory.role_definitions.sync", "tenant"},
	{"restore_execute", "restore.execute", "restore.execute", "tenant"},
	{"connection_check", "provider.connection.check", "provider_connection.check", "connection"},
	{"inventory_sync", "inventory.sync", "inventory.sync", "connection"},
	{"compliance_snapshot", "compliance.snapshot", "compliance.snapshot", "connection"},
	{"onboarding_verification", "provider.connection.check", "onboarding.run", "onboarding"},
	{"onboarding_bootstrap", "", "onboarding.run", "onboarding"},
}

func TestSurfacesMatchTheContract(t *testing.T) {
	if got := len(domain.Surfaces()); got != len(contractSurfaces) {
		t.Fatalf("%d surfaces registered, contract has %d", got, len(contractSurfaces))
	}
	for _, want := range contractSurfaces {
		s, ok := domain.LookupSurface(want.name)
		if !ok {
			t.Errorf("LookupSurface(%q) failed", want.name)
			continue
		}
		if s.Name != want.name || s.Operation != want.typ || string(s.Capability) != want.capability || string(s.Scope) != want.scope {
			t.Errorf("surface %q = %+v, want %+v", want.name, s, want)
		}
		if s.Operation != "" {
			if _, ok := domain.LookupOperation(s.Operation); !ok {
				t.Errorf("surface %q starts unknown operation %q", s.Name, s.Operation)
			}
		}
		// Only the owner can start a restore; operators can start every
		// other surface; auditors and readonly members none.
		if got, want := domain.RoleOperator.Can(s.Capability), want.name != "restore_execute"; got != want {
			t.Errorf("operator can start %s: %v, want %v", s.Name, got, want)
		}
		if !domain.RoleOwner.Can(s.Capability) || domain.RoleAuditor.Can(s.Capability) || domain.RoleReadonly.Can(s.Capability) {
			t.Errorf("surface %s: capability %s granted to the wrong roles", s.Name, s.Capability)
		}
	}
	for _, name := range []string{"", "Inventory_sync", "verify"} {
		if _, ok := domain.LookupSurface(name); ok {
			t.Errorf("LookupSurface(%q) found a surface", name)
		}
	}
}

// Contract section 6.
var contractReasons = []struct {
	code, class string
}{
	{"provider_connection.missing_default", "provider_access"},
	{"provider_connection.disabled", "provider_access"},
	{"provider_connection.consent_missing", "provider_consent"},
	{"provider_connection.credentials_invalid", "provider_credentials"},
	{"restore_run.preview_required", "restore_readiness"},
	{"provider.credentials_rejected", "provider_credentials"},
	{"provider.consent_revoked", "provider_consent"},
	{"provider.throttled", "provider_throttled"},
	{"provider.unavailable", "provider_unavailable"},
	{"execution.lost", "execution_interrupted"},
	{"operation.cancelled", "cancelled"},
}

// stepsOf returns the catalog's next steps for code as a failed run on a
// restore of rr-1 on connection conn-1 shows them.
func stepsOf(code domain.ReasonCode) []domain.NextStep {
	r := domain.MustReason(code)
	run, _ := domain.RunOf(domain.StartAccepted{RunID: "run-1", StartInfo: restore1, At: t0})
	run.Status, run.Reason = domain.StatusFailed, &r
	_, steps := domain.PresentRun(run)
	return steps
}

func TestReasonCatalogMatchesTheContract(t *testing.T) {
	codes := sortedStrings(domain.ReasonCodes())
	for _, want := range contractReasons {
		r, ok := domain.LookupReason(domain.ReasonCode(want.code))
		if !ok {
			t.Errorf("reason %s is not in the catalog", want.code)
			continue
		}
		if string(r.Code) != want.code || string(r.Class) != want.class || strings.TrimSpace(r.Message) == "" {
			t.Errorf("reason %s = %+v, want class %s and a message", want.code, r, want.class)
		}
		if !slices.Contains(codes, want.code) {
			t.Errorf("ReasonCodes() lacks %s", want.code)
		}
		steps := stepsOf(r.Code)
		if len(steps) == 0 {
			t.Errorf("reason %s has no next step", want.code)
		}
		for _, s := range steps {
			if s.Label == "" || s.Action == "" {
				t.Errorf("reason %s: incomplete next step %+v", want.code, s)
			}
			if s.Href != nil && (strings.Contains(*s.Href, "{") || !strings.HasPrefix(*s.Href, "/api/v1/")) {
				t.Errorf("reason %s: next step href %q", want.code, *s.Href)
			}
		}
	}
	// Every catalog entry, including the answers that point at another
	// run, has a class, a message and a next step.
	for _, c := range domain.ReasonCodes() {
		r := domain.MustReason(c)
		if r.Class == "" || r.Message == "" || len(stepsOf(c)) == 0 {
			t.Errorf("catalog entry %s incomplete: %+v", c, r)
		}
	}
	for _, c := range []domain.ReasonCode{"", "provider.exploded", "Provider.Throttled"} {
		if _, ok := domain.LookupReason(c); ok {
			t.Errorf("LookupReason(%q) found an entry", c)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("MustReason of an unknown code did not panic")
			}
		}()
		domain.MustReason("nope")
	}()
}

// The same problem found before queueing or during execution has the same
// class and the same remedy.
func TestSameProblemSameRemedy(t *testing.T) {
	for _, pair := range [][2]domain.ReasonCode{
		{domain.ReasonCredentialsInvalid, domain.ReasonCredentialsRejected},
		{domain.ReasonConsentMissing, domain.ReasonConsentRevoked},
	} {
		a, b := domain.MustReason(pair[0]), domain.MustReason(pair[1])
		if a.Class != b.Class {
			t.Errorf("%s and %s: classes %s and %s", pair[0], pair[1], a.Class, b.Class)
		}
		sa, sb := stepsOf(pair[0]), stepsOf(pair[1])
		if len(sa) == 0 || len(sb) == 0 || sa[0].Action != sb[0].Action || *sa[0].Href != *sb[0].Href {
			t.Errorf("%s and %s: next steps %+v and %+v", pair[0], pair[1], sa, sb)
		}
	}
}

func TestRunStatuses(t *testing.T) {
	for _, c := range []struct {
		s      string
		active bool
	}{
		{"blocked", false}, {"queued", true}, {"running", true},
		{"succeeded", false}, {"failed", false}, {"cancelled", false},
	} {
		st, ok := domain.ParseRunStatus(c.s)
		if !ok || string(st) != c.s {
			t.Errorf("ParseRunStatus(%q) = %q, %v", c.s, st, ok)
		}
		if st.Active() != c.active || st.Terminal() == c.active {
			t.Errorf("%s: active %v terminal %v", c.s, st.Active(), st.Terminal())
		}
	}
	for _, s := range []string{"", "Queued", "lost", "pending"} {
		if _, ok := domain.ParseRunStatus(s); ok {
			t.Errorf("ParseRunStatus(%q) accepted", s)
		}
	}
}

func TestScopeIDs(t *testing.T) {
	if domain.ConnectionScope("a") == domain.TenantScope("a") {
		t.Fatal("a connection and a tenant with the same id share a scope")
	}
	if domain.ConnectionScope("a") == domain.ConnectionScope("b") {
		t.Fatal("two connections share a scope")
	}
}

func TestEventTypesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range append(domain.ScopeEvents(), domain.TenancyEvents()...) {
		name := e.EventType()
		if name == "" || seen[name] {
			t.Errorf("event type %q empty or used twice", name)
		}
		seen[name] = true
	}
}
