package api

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// endpoint documents one route for the OpenAPI document.
type endpoint struct {
	method, path, summary string
	// auth: "user", "admin" or "" (none).
	auth string
	// request names the request body schema ("" for none).
	request string
	// responses maps a status to the schema of its body.
	responses map[int]string
}

// endpoints documents every route; TestOpenAPICoversRoutes keeps it true.
func endpoints() []endpoint {
	// A start's 422 is a blocked StartResult or a problem (confirmation
	// required, warnings not acknowledged, idempotency key reused).
	startResponses := map[int]string{202: "StartResult", 200: "StartResult", 409: "StartResult", 422: "StartResult|Problem",
		401: "Problem", 403: "Problem", 404: "Problem"}
	eps := []endpoint{
		{"GET", "/healthz", "Liveness", "", "", map[int]string{200: "Status"}},
		{"GET", "/readyz", "Readiness: database reachable and migrated", "", "", map[int]string{200: "Status", 503: "Problem"}},
		{"GET", "/metrics", "Prometheus metrics", "", "", map[int]string{200: "Text"}},
		{"GET", "/api/v1/openapi.json", "This document", "", "", map[int]string{200: "Object"}},
		{"POST", "/api/v1/admin/workspaces", "Create a workspace", "admin", "NewWorkspace", map[int]string{201: "Workspace", 401: "Problem", 422: "Problem"}},
		{"POST", "/api/v1/admin/tenants", "Create a tenant", "admin", "NewTenant", map[int]string{201: "Tenant", 401: "Problem", 422: "Problem"}},
		{"POST", "/api/v1/admin/users", "Create a user; answers its token once", "admin", "NewUser", map[int]string{201: "UserWithToken", 401: "Problem", 409: "Problem", 422: "Problem"}},
		{"POST", "/api/v1/admin/memberships", "Grant a role on a tenant", "admin", "NewMembership", map[int]string{201: "Membership", 401: "Problem", 422: "Problem"}},
		{"POST", "/api/v1/tenants/:tenantId/provider-connections", "Create a provider connection", "user", "NewConnection", map[int]string{201: "Connection", 401: "Problem", 403: "Problem", 404: "Problem", 422: "Problem"}},
		{"GET", "/api/v1/tenants/:tenantId/provider-connections", "List a tenant's provider connections", "user", "", map[int]string{200: "ConnectionList", 401: "Problem", 404: "Problem"}},
		{"GET", "/api/v1/provider-connections/:connectionId", "Read a provider connection", "user", "", map[int]string{200: "Connection", 401: "Problem", 404: "Problem"}},
		{"PATCH", "/api/v1/provider-connections/:connectionId", "Change a provider connection", "user", "ConnectionPatch", map[int]string{200: "Connection", 401: "Problem", 403: "Problem", 404: "Problem", 422: "Problem"}},
		{"POST", "/api/v1/provider-connections/:connectionId/make-default", "Make a connection the tenant's default", "user", "", map[int]string{200: "Connection", 401: "Problem", 403: "Problem", 404: "Problem"}},
		{"POST", "/api/v1/tenants/:tenantId/restore-runs", "Draft a restore run", "user", "NewRestoreRun", map[int]string{201: "RestoreRun", 401: "Problem", 403: "Problem", 404: "Problem", 422: "Problem"}},
		{"POST", "/api/v1/restore-runs/:restoreRunId/preview", "Preview a restore run; answers warnings", "user", "", map[int]string{200: "RestoreRun", 401: "Problem", 403: "Problem", 404: "Problem"}},
		{"GET", "/api/v1/restore-runs/:restoreRunId", "Read a restore run", "user", "", map[int]string{200: "RestoreRun", 401: "Problem", 404: "Problem"}},
		{"POST", "/api/v1/tenants/:tenantId/onboarding-sessions", "Open an onboarding session", "user", "NewOnboardingSession", map[int]string{201: "OnboardingSession", 401: "Problem", 403: "Problem", 404: "Problem"}},
		{"GET", "/api/v1/onboarding-sessions/:sessionId", "Read an onboarding session: steps, runs, pending items", "user", "", map[int]string{200: "OnboardingSession", 401: "Problem", 404: "Problem"}},
		{"POST", "/api/v1/onboarding-sessions/:sessionId/verify", "Start: onboarding_verification (honours Idempotency-Key)", "user", "", startResponses},
		{"POST", "/api/v1/onboarding-sessions/:sessionId/bootstrap", "Start: onboarding_bootstrap, admitting the first selected operation (honours Idempotency-Key)", "user", "Bootstrap", withConflict(startResponses)},
		{"POST", "/api/v1/onboarding-sessions/:sessionId/bootstrap/continue", "Start: retry the first pending bootstrap operation (honours Idempotency-Key)", "user", "", withConflict(startResponses)},
		{"GET", "/api/v1/operations", "List runs, newest first, with cursor paging", "user", "", map[int]string{200: "RunPage", 400: "Problem", 401: "Problem", 404: "Problem"}},
		{"GET", "/api/v1/operations/:runId", "Read a run with its message and counts", "user", "", map[int]string{200: "RunDetail", 401: "Problem", 404: "Problem"}},
		{"GET", "/api/v1/operations/:runId/events", "A run's event history", "user", "", map[int]string{200: "EventList", 401: "Problem", 404: "Problem"}},
		{"POST", "/api/v1/operations/:runId/cancel", "Cancel a queued or running run", "user", "", map[int]string{200: "RunDetail", 401: "Problem", 403: "Problem", 404: "Problem", 409: "Problem"}},
		{"GET", "/api/v1/audit/events", "A tenant's events in commit order", "user", "", map[int]string{200: "AuditPage", 400: "Problem", 401: "Problem", 403: "Problem", 404: "Problem"}},
		{"GET", "/api/v1/me/notifications", "The caller's notifications", "user", "", map[int]string{200: "NotificationPage", 401: "Problem"}},
		{"GET", "/api/v1/queue", "Queue depth and oldest queued age of the caller's tenants", "user", "", map[int]string{200: "QueueStats", 401: "Problem", 404: "Problem"}},
	}
	for _, r := range startRoutes() {
		req := "TenantStart"
		switch r.surface.Scope {
		case "connection":
			req = ""
		}
		if r.surface.Operation == "restore.execute" {
			req = "RestoreStart"
		}
		eps = append(eps, endpoint{"POST", r.path, "Start: " + r.surface.Name + " (honours Idempotency-Key)", "user", req, startResponses})
	}
	return eps
}

// withConflict notes that a 409 may also be a problem (not a StartResult).
func withConflict(r map[int]string) map[int]string {
	out := map[int]string{}
	for k, v := range r {
		out[k] = v
	}
	out[409] = "StartResult|Problem"
	return out
}

// withCommonProblems adds the problems any endpoint of its kind answers:
// 400 for bad ids, queries or bodies and 503 while the database is
// unavailable on every authenticated endpoint, and
// 413 for a body over the limit on every endpoint that reads one.
func withCommonProblems(ep endpoint) map[int]string {
	out := map[int]string{}
	for k, v := range ep.responses {
		out[k] = v
	}
	add := func(status int) {
		if _, ok := out[status]; !ok {
			out[status] = "Problem"
		}
	}
	if ep.auth != "" {
		add(http.StatusBadRequest)
		// database_unavailable and request_timeout, with Retry-After.
		add(http.StatusServiceUnavailable)
	}
	if ep.method == http.MethodPost || ep.method == http.MethodPatch {
		add(http.StatusRequestEntityTooLarge)
	}
	return out
}

var echoParam = regexp.MustCompile(`:([A-Za-z]+)`)

func openAPIPath(echoPath string) string {
	return echoParam.ReplaceAllString(echoPath, "{$1}")
}

func ref(name string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

// openAPIDocument builds the OpenAPI 3 document of every endpoint.
func openAPIDocument() map[string]any {
	paths := map[string]any{}
	for _, ep := range endpoints() {
		p := openAPIPath(ep.path)
		item, _ := paths[p].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[p] = item
		}
		op := map[string]any{"summary": ep.summary, "operationId": strings.ToLower(ep.method) + strings.ReplaceAll(p, "/", "_")}
		var params []any
		for _, m := range echoParam.FindAllStringSubmatch(ep.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true,
				"schema": map[string]any{"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$"}})
		}
		if strings.Contains(ep.summary, "Idempotency-Key") {
			params = append(params, map[string]any{"name": "Idempotency-Key", "in": "header", "required": false, "schema": map[string]any{"type": "string"}})
		}
		if params != nil {
			op["parameters"] = params
		}
		switch ep.auth {
		case "user":
			op["security"] = []any{map[string]any{"bearer": []any{}}}
		case "admin":
			op["security"] = []any{map[string]any{"adminBearer": []any{}}}
		}
		if ep.request != "" {
			// Tenant starts and new onboarding sessions may omit the body.
			required := ep.request != "TenantStart" && ep.request != "NewOnboardingSession"
			op["requestBody"] = map[string]any{"required": required, "content": map[string]any{"application/json": map[string]any{"schema": ref(ep.request)}}}
		}
		responses := map[string]any{}
		for status, schema := range withCommonProblems(ep) {
			// "A|B": the body is one of several schemas, told apart by
			// their media types.
			content := map[string]any{}
			for _, name := range strings.Split(schema, "|") {
				ct := "application/json"
				switch name {
				case "Problem":
					ct = problemContentType
				case "Text":
					ct = "text/plain"
				}
				content[ct] = map[string]any{"schema": ref(name)}
			}
			responses[strconv.Itoa(status)] = map[string]any{
				"description": http.StatusText(status),
				"content":     content,
			}
		}
		op["responses"] = responses
		item[strings.ToLower(ep.method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{"title": "opsgate", "version": "1.0.0",
			"description": "The one gate every provider-backed operation start passes through."},
		"paths": paths,
		"components": map[string]any{
			"securitySchemes": map[string]any{
				"bearer":      map[string]any{"type": "http", "scheme": "bearer", "description": "A user token (ogu_...)."},
				"adminBearer": map[string]any{"type": "http", "scheme": "bearer", "description": "The admin token (OPSGATE_ADMIN_TOKEN)."},
			},
			"schemas": schemas(),
		},
	}
}

func serveOpenAPI(c echo.Context) error {
	return c.JSON(http.StatusOK, openAPIDocument())
}
