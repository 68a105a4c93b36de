package api

import (
	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/executors"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/internal/metrics"
	"github.com/opsgate/opsgate/onboarding"
	"github.com/opsgate/opsgate/projections"
	"github.com/opsgate/opsgate/restores"
	"github.com/opsgate/opsgate/tenancy"
	"github.com/opsgate/opsgate/tokens"
	"github.com/opsgate/opsgate/webhooks"
)

// Deps are the application services the handlers call.
type Deps struct {
	Tokens      *tokens.Service
	Tenancy     *tenancy.Service
	Connections *connections.Service
	Restores    *restores.Service
	Executors   *executors.Service
	Gate        *gate.Service
	Onboarding  *onboarding.Service
	Reader      *projections.Reader
	Store       *eventstore.Store
	AdminToken  string
	Metrics     *metrics.Metrics
	Executor    ExecutorSettings
	Webhooks    *webhooks.Service
	Changes     ChangeSettings
	// Limits bounds each caller's rate (nil: no limit).
	Limits *RateLimits
	// AuditKey signs the audit checkpoints (nil: none are signed).
	AuditKey *audit.Key
}

type handlers struct {
	tenancy    *tenancy.Service
	conns      *connections.Service
	restores   *restores.Service
	executors  *executors.Service
	executor   ExecutorSettings
	gate       *gate.Service
	onboarding *onboarding.Service
	reader     *projections.Reader
	store      *eventstore.Store
	metrics    *metrics.Metrics
	history    *audit.History
	webhooks   *webhooks.Service
	changes    ChangeSettings
	auditKey   *audit.Key
}

// startRoute is one start surface of contract section 3.
type startRoute struct {
	path    string
	surface domain.Surface
}

// startRoutes lists every start endpoint; each is served by handlers.start.
func startRoutes() []startRoute {
	return []startRoute{
		{"/api/v1/tenants/:tenantId/verify", domain.SurfaceTenantVerification},
		{"/api/v1/tenants/:tenantId/directory/groups/sync", domain.SurfaceGroupsSync},
		{"/api/v1/tenants/:tenantId/directory/role-definitions/sync", domain.SurfaceRoleDefinitionsSync},
		{"/api/v1/tenants/:tenantId/restore-runs/:restoreRunId/execute", domain.SurfaceRestoreExecute},
		{"/api/v1/provider-connections/:connectionId/check", domain.SurfaceConnectionCheck},
		{"/api/v1/provider-connections/:connectionId/inventory-sync", domain.SurfaceInventorySync},
		{"/api/v1/provider-connections/:connectionId/compliance-snapshot", domain.SurfaceComplianceSnapshot},
	}
}

// Routes returns the registration of every endpoint of contract sections
// 3 to 7 (health endpoints are registered by NewEcho).
func Routes(d Deps) func(e *echo.Echo) {
	h := &handlers{tenancy: d.Tenancy, conns: d.Connections, restores: d.Restores, executors: d.Executors,
		executor: d.Executor, gate: d.Gate, onboarding: d.Onboarding, reader: d.Reader, store: d.Store, metrics: d.Metrics,
		history: audit.NewHistory(d.Store), webhooks: d.Webhooks, changes: d.Changes, auditKey: d.AuditKey}
	cs := Callers{Tokens: d.Tokens, OnBehalf: d.Tenancy, Limits: d.Limits}
	if d.Metrics != nil {
		cs.Seen = d.Metrics.ObserveCaller
	}
	return func(e *echo.Echo) {
		if d.Metrics != nil {
			e.GET("/metrics", echo.WrapHandler(d.Metrics.Handler()))
		}
		e.GET("/api/v1/openapi.json", serveOpenAPI())
		e.GET("/api/v1/audit/key", h.auditKeyAnswer)

		admin := e.Group("/api/v1/admin", requireAdmin(d.AdminToken, cs))
		admin.POST("/workspaces", h.createWorkspace)
		admin.POST("/tenants", h.createTenant)
		admin.POST("/users", h.createUser)
		admin.PATCH("/users/:userId", h.updateUser)
		admin.PUT("/users/:userId/memberships/:tenantId", h.putMembership)
		admin.DELETE("/users/:userId/memberships/:tenantId", h.deleteMembership)
		admin.POST("/memberships", h.grantMembership)
		admin.POST("/executors", h.registerExecutor)
		admin.GET("/executors", h.listExecutors)
		admin.DELETE("/executors/:executorId", h.revokeExecutor)
		admin.POST("/integrations", h.createIntegration)
		admin.GET("/integrations", h.listIntegrations)
		admin.DELETE("/integrations/:integrationId", h.revokeIntegration)
		admin.POST("/webhooks", h.createWebhook)
		admin.GET("/webhooks", h.listWebhooks)
		admin.GET("/webhooks/:webhookId", h.getWebhook)
		admin.PATCH("/webhooks/:webhookId", h.updateWebhook)
		admin.DELETE("/webhooks/:webhookId", h.deleteWebhook)
		admin.POST("/webhooks/:webhookId/rotate-secret", h.rotateWebhookSecret)
		admin.POST("/webhooks/:webhookId/ping", h.pingWebhook)
		admin.GET("/webhooks/:webhookId/deliveries", h.listDeliveries)
		admin.POST("/webhooks/:webhookId/deliveries/:deliveryId/replay", h.replayDelivery)
		for _, kind := range []string{"users", "integrations", "executors"} {
			owner := ownerParams[kind]
			admin.POST("/"+kind+"/:"+owner+"/tokens", h.issueToken(kind))
			admin.GET("/"+kind+"/:"+owner+"/tokens", h.listTokens(kind))
			admin.DELETE("/"+kind+"/:"+owner+"/tokens/:tokenId", h.revokeToken(kind))
		}

		ex := e.Group("/api/v1/executor", requireExecutor(d.Executors, cs))
		ex.POST("/claims", h.claim)
		ex.POST("/runs/:runId/heartbeat", h.heartbeat)
		ex.POST("/runs/:runId/complete", h.complete)

		v1 := e.Group("/api/v1", requireUser(cs))
		for _, r := range startRoutes() {
			e.POST(r.path, h.start(r.surface), requireUser(cs))
		}
		v1.GET("/tenants", h.listTenants)
		v1.POST("/tenants/:tenantId/provider-connections", h.createConnection)
		v1.GET("/tenants/:tenantId/provider-connections", h.listConnections)
		v1.GET("/provider-connections/:connectionId", h.getConnection)
		v1.PATCH("/provider-connections/:connectionId", h.updateConnection)
		v1.POST("/provider-connections/:connectionId/make-default", h.makeDefault)

		v1.POST("/tenants/:tenantId/restore-runs", h.createRestoreRun)
		v1.POST("/restore-runs/:restoreRunId/preview", h.previewRestoreRun)
		v1.GET("/restore-runs/:restoreRunId", h.getRestoreRun)

		v1.POST("/tenants/:tenantId/onboarding-sessions", h.createOnboardingSession)
		v1.GET("/onboarding-sessions/:sessionId", h.getOnboardingSession)
		v1.POST("/onboarding-sessions/:sessionId/verify", h.onboardingVerify)
		v1.POST("/onboarding-sessions/:sessionId/bootstrap", h.onboardingBootstrap)
		v1.POST("/onboarding-sessions/:sessionId/bootstrap/continue", h.onboardingContinue)

		v1.GET("/operations", h.listOperations)
		v1.GET("/operations/:runId", h.getOperation)
		v1.GET("/operations/:runId/events", h.operationEvents)
		v1.POST("/operations/:runId/cancel", h.cancelOperation)
		v1.POST("/operations/:runId/rerun", h.rerun)
		v1.POST("/operations/cancel", h.cancelMany)
		v1.POST("/starts/batch", h.batchStart)
		v1.GET("/tenants/:tenantId/availability", h.availability)

		v1.GET("/operations/:runId/explain", h.explainOperation)

		v1.GET("/audit/events", h.auditTrail)
		v1.GET("/audit/export", h.auditExport)
		v1.GET("/audit/digest", h.auditDigest)
		v1.GET("/audit/checkpoint", h.auditCheckpoint)
		v1.GET("/audit/proof", h.auditProof)
		v1.GET("/audit/consistency", h.auditConsistency)
		v1.GET("/me/notifications", h.notifications)
		v1.GET("/queue", h.queue)
		v1.GET("/changes", h.listChanges)
	}
}
