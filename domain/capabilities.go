package domain

import "slices"

// Capability is a permission a tenant membership role may grant.
type Capability string

// Capabilities of contract section 4.
const (
	CapOperationsView               Capability = "operations.view"
	CapTenantVerify                 Capability = "tenant.verify"
	CapProviderConnectionCheck      Capability = "provider_connection.check"
	CapProviderConnectionManage     Capability = "provider_connection.manage"
	CapInventorySync                Capability = "inventory.sync"
	CapComplianceSnapshot           Capability = "compliance.snapshot"
	CapDirectoryGroupsSync          Capability = "directory.groups.sync"
	CapDirectoryRoleDefinitionsSync Capability = "directory.role_definitions.sync"
	CapOnboardingRun                Capability = "onboarding.run"
	CapRestoreExecute               Capability = "restore.execute"
	CapAuditRead                    Capability = "audit.read"
)

// Role is a tenant membership role.
type Role string

// Roles of contract section 4.
const (
	RoleOwner    Role = "owner"
	RoleOperator Role = "operator"
	RoleAuditor  Role = "auditor"
	RoleReadonly Role = "readonly"
)

// roleCapabilities is the one place where roles map to capabilities.
var roleCapabilities = map[Role][]Capability{
	RoleOwner: {
		CapOperationsView, CapTenantVerify, CapProviderConnectionCheck, CapProviderConnectionManage,
		CapInventorySync, CapComplianceSnapshot, CapDirectoryGroupsSync, CapDirectoryRoleDefinitionsSync,
		CapOnboardingRun, CapRestoreExecute, CapAuditRead,
	},
	RoleOperator: {
		CapOperationsView, CapTenantVerify, CapProviderConnectionCheck, CapInventorySync,
		CapComplianceSnapshot, CapDirectoryGroupsSync, CapDirectoryRoleDefinitionsSync, CapOnboardingRun,
	},
	RoleAuditor:  {CapOperationsView, CapAuditRead},
	RoleReadonly: {CapOperationsView},
}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, bool) {
	r := Role(s)
	_, ok := roleCapabilities[r]
	return r, ok
}

// Roles lists every role.
func Roles() []Role { return []Role{RoleOwner, RoleOperator, RoleAuditor, RoleReadonly} }

// Can reports whether role grants capability.
func (r Role) Can(c Capability) bool {
	return slices.Contains(roleCapabilities[r], c)
}

// Capabilities lists what role grants.
func (r Role) Capabilities() []Capability {
	return slices.Clone(roleCapabilities[r])
}
