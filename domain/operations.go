package domain

// Prerequisite is a readiness condition an operation needs before it may
// be queued. Prerequisites are checked in the order they are declared in
// the preflight, which is also the order in which reasons are reported.
type Prerequisite string

// Prerequisites known to the preflight.
const (
	NeedsConnectionEnabled Prerequisite = "connection_enabled"
	NeedsConsent           Prerequisite = "consent_granted"
	NeedsValidCredentials  Prerequisite = "credentials_valid"
	NeedsRestorePreview    Prerequisite = "restore_previewed"
	NeedsExecutor          Prerequisite = "executor_available"
)

// providerAccess is what every provider-backed operation needs: a usable
// connection, and something that executes the operation for its provider.
var providerAccess = []Prerequisite{NeedsConnectionEnabled, NeedsConsent, NeedsValidCredentials, NeedsExecutor}

// Operation is one kind of provider-backed background operation.
type Operation struct {
	// Type is the write-time type string, kept exactly as stored.
	Type string
	// Canonical is the dotted canonical name.
	Canonical string
	// Aliases are further names that filters accept.
	Aliases []string
	// Label is the operator-facing name ("Inventory sync").
	Label string
	// Capability is what cancelling a run of this operation needs when the
	// surface is unknown; starting it needs the surface's capability.
	Capability Capability
	// TargetKey names the target of the operation, "" if it has none.
	TargetKey string
	// Destructive operations need explicit confirmation.
	Destructive bool
	// Prerequisites are checked by the preflight.
	Prerequisites []Prerequisite
}

// Operation types of contract section 3.
const (
	OpConnectionCheck     = "provider.connection.check"
	OpGroupsSync          = "entra_group_sync"
	OpRoleDefinitionsSync = "directory_role_definitions.sync"
	OpRestoreExecute      = "restore.execute"
	OpInventorySync       = "inventory.sync"
	OpComplianceSnapshot  = "compliance.snapshot"
)

var operations = []Operation{
	{Type: OpConnectionCheck, Canonical: "provider.connection.check", Label: "Provider connection check",
		Capability: CapProviderConnectionCheck, Prerequisites: providerAccess},
	{Type: OpGroupsSync, Canonical: "directory.groups.sync", Label: "Directory groups sync",
		Capability: CapDirectoryGroupsSync, Prerequisites: providerAccess},
	{Type: OpRoleDefinitionsSync, Canonical: "directory.role_definitions.sync", Label: "Role definitions sync",
		Capability: CapDirectoryRoleDefinitionsSync, Prerequisites: providerAccess},
	{Type: OpRestoreExecute, Canonical: "restore.execute", Label: "Restore execution",
		Capability: CapRestoreExecute, TargetKey: "restore_run_id", Destructive: true,
		Prerequisites: append(append([]Prerequisite{}, providerAccess...), NeedsRestorePreview)},
	{Type: OpInventorySync, Canonical: "inventory.sync", Label: "Inventory sync",
		Capability: CapInventorySync, Prerequisites: providerAccess},
	{Type: OpComplianceSnapshot, Canonical: "compliance.snapshot", Label: "Compliance snapshot",
		Capability: CapComplianceSnapshot, Prerequisites: providerAccess},
}

// LookupOperation finds an operation by its write-time type, canonical
// name or an alias.
func LookupOperation(name string) (Operation, bool) {
	for _, op := range operations {
		if op.Type == name || op.Canonical == name {
			return op, true
		}
		for _, a := range op.Aliases {
			if a == name {
				return op, true
			}
		}
	}
	return Operation{}, false
}

// MustOperation returns the operation of a type known at compile time.
func MustOperation(name string) Operation {
	op, ok := LookupOperation(name)
	if !ok {
		panic("domain: unknown operation " + name)
	}
	return op
}

// Operations lists every operation.
func Operations() []Operation { return append([]Operation(nil), operations...) }

// Surface is a place from which an operator starts an operation.
type Surface struct {
	// Name is recorded on the run ("inventory_sync").
	Name string
	// Operation is the write-time type it starts; "" for bootstrap, where
	// the operator selects the operations.
	Operation string
	// Capability is what the initiator needs on the tenant.
	Capability Capability
	// Scope says what the start names: a tenant, a connection or an
	// onboarding session.
	Scope SurfaceScope
}

// SurfaceScope is what a surface's start names.
type SurfaceScope string

// What starts name: a tenant (and optionally a connection of it), a
// connection, or an onboarding session (which names its tenant and
// optionally its connection).
const (
	ScopeTenant     SurfaceScope = "tenant"
	ScopeConnection SurfaceScope = "connection"
	ScopeOnboarding SurfaceScope = "onboarding"
)

// Surfaces of contract section 3.
var (
	SurfaceTenantVerification     = Surface{"tenant_verification", OpConnectionCheck, CapTenantVerify, ScopeTenant}
	SurfaceGroupsSync             = Surface{"directory_groups_sync", OpGroupsSync, CapDirectoryGroupsSync, ScopeTenant}
	SurfaceRoleDefinitionsSync    = Surface{"role_definitions_sync", OpRoleDefinitionsSync, CapDirectoryRoleDefinitionsSync, ScopeTenant}
	SurfaceRestoreExecute         = Surface{"restore_execute", OpRestoreExecute, CapRestoreExecute, ScopeTenant}
	SurfaceConnectionCheck        = Surface{"connection_check", OpConnectionCheck, CapProviderConnectionCheck, ScopeConnection}
	SurfaceInventorySync          = Surface{"inventory_sync", OpInventorySync, CapInventorySync, ScopeConnection}
	SurfaceComplianceSnapshot     = Surface{"compliance_snapshot", OpComplianceSnapshot, CapComplianceSnapshot, ScopeConnection}
	SurfaceOnboardingVerification = Surface{"onboarding_verification", OpConnectionCheck, CapOnboardingRun, ScopeOnboarding}
	SurfaceOnboardingBootstrap    = Surface{"onboarding_bootstrap", "", CapOnboardingRun, ScopeOnboarding}
)

// RerunSurfaceName is the surface of reruns (contract section 12).
const RerunSurfaceName = "rerun"

// RerunSurface is the surface of a rerun of a run of opType: it starts
// the same operation with its capability, on a tenant (and the connection
// the original was decided on, named explicitly).
func RerunSurface(opType string) Surface {
	op := MustOperation(opType)
	return Surface{Name: RerunSurfaceName, Operation: op.Type, Capability: op.Capability, Scope: ScopeTenant}
}

// Surfaces lists every surface.
func Surfaces() []Surface {
	return []Surface{
		SurfaceTenantVerification, SurfaceGroupsSync, SurfaceRoleDefinitionsSync, SurfaceRestoreExecute,
		SurfaceConnectionCheck, SurfaceInventorySync, SurfaceComplianceSnapshot,
		SurfaceOnboardingVerification, SurfaceOnboardingBootstrap,
	}
}

// LookupSurface finds a surface by name.
func LookupSurface(name string) (Surface, bool) {
	for _, s := range Surfaces() {
		if s.Name == name {
			return s, true
		}
	}
	return Surface{}, false
}

// Bootstrappable reports whether an onboarding bootstrap may select o:
// operations that need a target (a restore run) may not.
func (o Operation) Bootstrappable() bool { return o.TargetKey == "" }

// BootstrapOperations are the operations an onboarding bootstrap may select.
func BootstrapOperations() []Operation {
	var ops []Operation
	for _, op := range operations {
		if op.Bootstrappable() {
			ops = append(ops, op)
		}
	}
	return ops
}
