package api

// Schemas of the OpenAPI document. Each object lists its required
// properties; the OpenAPI test checks real responses against them.

func obj(required []string, props map[string]any) map[string]any {
	return map[string]any{"type": "object", "required": required, "properties": props}
}

func str() map[string]any { return map[string]any{"type": "string"} }
func nullable(s map[string]any) map[string]any {
	out := map[string]any{"nullable": true}
	for k, v := range s {
		out[k] = v
	}
	return out
}
func boolean() map[string]any { return map[string]any{"type": "boolean"} }
func integer() map[string]any { return map[string]any{"type": "integer"} }
func enum(values ...string) map[string]any {
	vs := make([]any, len(values))
	for i, v := range values {
		vs[i] = v
	}
	return map[string]any{"type": "string", "enum": vs}
}
func array(items map[string]any) map[string]any {
	return map[string]any{"type": "array", "items": items}
}
func dateTime() map[string]any { return map[string]any{"type": "string", "format": "date-time"} }

func schemas() map[string]any {
	reason := obj([]string{"code", "class", "message"}, map[string]any{"code": str(), "class": str(), "message": str()})
	nextStep := obj([]string{"label", "action", "href"}, map[string]any{"label": str(), "action": str(), "href": nullable(str())})
	message := obj([]string{"title", "body", "tone"}, map[string]any{"title": str(), "body": str(), "tone": enum("success", "info", "warning", "danger")})
	connRef := obj([]string{"id", "display_name", "provider"}, map[string]any{"id": str(), "display_name": str(), "provider": str()})
	runProps := map[string]any{
		"id": str(), "tenant_id": str(), "type": str(), "canonical_type": str(), "label": str(),
		"status":              enum("blocked", "queued", "running", "succeeded", "failed", "cancelled"),
		"target":              nullable(str()),
		"provider_connection": nullable(connRef),
		"initiator_id":        str(), "surface": str(), "created_at": dateTime(),
		"started_at": nullable(dateTime()), "finished_at": nullable(dateTime()),
		"reason": nullable(reason),
		"links":  obj([]string{"self"}, map[string]any{"self": str()}),
	}
	runRequired := []string{"id", "tenant_id", "type", "canonical_type", "label", "status", "target", "provider_connection",
		"initiator_id", "surface", "created_at", "started_at", "finished_at", "reason", "links"}
	run := obj(runRequired, runProps)
	detailProps := map[string]any{"message": message, "next_steps": array(nextStep), "deduped_count": integer(), "scope_busy_count": integer()}
	for k, v := range runProps {
		detailProps[k] = v
	}
	detail := obj(append(append([]string{}, runRequired...), "message", "next_steps", "deduped_count", "scope_busy_count"), detailProps)
	simulation := obj([]string{"latency_ms", "fail_with"}, map[string]any{"latency_ms": integer(), "fail_with": nullable(str()), "throttle_times": integer()})
	connection := obj([]string{"id", "tenant_id", "provider", "display_name", "is_default", "consent", "credentials", "enabled", "simulation", "created_at", "updated_at"},
		map[string]any{"id": str(), "tenant_id": str(), "provider": str(), "display_name": str(), "is_default": boolean(),
			"consent": enum("granted", "missing", "revoked"), "credentials": enum("valid", "expired", "invalid", "missing"),
			"enabled": boolean(), "simulation": nullable(simulation), "created_at": dateTime(), "updated_at": dateTime()})
	event := obj([]string{"position", "event_id", "stream", "version", "type", "schema_version", "recorded_at", "data", "metadata"},
		map[string]any{"position": integer(), "event_id": str(), "stream": str(), "version": integer(), "type": str(),
			"schema_version": integer(), "recorded_at": dateTime(), "data": map[string]any{"type": "object"},
			"metadata": obj([]string{"actor", "correlation_id", "request_id"}, map[string]any{"actor": str(), "tenant_id": str(),
				"correlation_id": str(), "causation_id": str(), "request_id": str()})})
	notification := obj([]string{"id", "tenant_id", "run_id", "status", "message", "next_steps", "reason", "created_at", "links"},
		map[string]any{"id": str(), "tenant_id": str(), "run_id": str(), "status": str(), "message": message,
			"next_steps": array(nextStep), "reason": nullable(reason), "created_at": dateTime(),
			"links": obj([]string{"self"}, map[string]any{"self": str()})})
	attempt := obj([]string{"run_id", "outcome", "reason", "at", "links"}, map[string]any{"run_id": str(),
		"outcome": enum("accepted", "deduped", "scope_busy", "blocked"), "reason": nullable(reason), "at": dateTime(),
		"links": obj([]string{"self"}, map[string]any{"self": str()})})
	item := obj([]string{"index", "type", "canonical_type", "label", "status", "run_id", "last_outcome", "last_run_status", "last_reason", "attempts"},
		map[string]any{"index": integer(), "type": str(), "canonical_type": str(), "label": str(),
			"status": enum("pending", "admitted", "succeeded"), "run_id": nullable(str()),
			"last_outcome": nullable(str()), "last_run_status": nullable(str()), "last_reason": nullable(reason), "attempts": array(attempt)})
	session := obj([]string{"id", "tenant_id", "provider_connection_id", "created_by", "created_at", "status", "steps"},
		map[string]any{"id": str(), "tenant_id": str(), "provider_connection_id": nullable(str()), "created_by": str(),
			"created_at": dateTime(), "status": enum("open", "bootstrapping", "attention_needed", "completed"),
			"steps": obj([]string{"verification", "bootstrap"}, map[string]any{
				"verification": obj([]string{"status", "attempts"}, map[string]any{"status": str(), "attempts": array(attempt)}),
				"bootstrap": obj([]string{"status", "initiator_id", "items", "pending"}, map[string]any{
					"status": enum("not_started", "running", "waiting", "completed"), "initiator_id": nullable(str()),
					"items": array(item), "pending": array(str())}),
			})})
	return map[string]any{
		"OnboardingSession":    session,
		"NewOnboardingSession": obj([]string{}, map[string]any{"provider_connection_id": str()}),
		"Bootstrap":            obj([]string{"operations"}, map[string]any{"operations": array(str())}),
		"Problem": obj([]string{"type", "title", "status", "detail", "code"}, map[string]any{
			"type": str(), "title": str(), "status": integer(), "detail": str(), "code": str()}),
		"Status":    obj([]string{"status"}, map[string]any{"status": str()}),
		"Text":      str(),
		"Object":    map[string]any{"type": "object"},
		"Reason":    reason,
		"NextStep":  nextStep,
		"Message":   message,
		"Run":       run,
		"RunDetail": detail,
		"StartResult": obj([]string{"outcome", "run", "reason", "next_steps", "message"}, map[string]any{
			"outcome": enum("accepted", "deduped", "scope_busy", "blocked"), "run": run, "reason": nullable(reason),
			"next_steps": array(nextStep), "message": message}),
		"RunPage":          obj([]string{"items", "next_cursor"}, map[string]any{"items": array(run), "next_cursor": nullable(str())}),
		"EventList":        obj([]string{"items"}, map[string]any{"items": array(event)}),
		"AuditPage":        obj([]string{"items", "next_after"}, map[string]any{"items": array(event), "next_after": nullable(integer())}),
		"NotificationPage": obj([]string{"items", "next_cursor"}, map[string]any{"items": array(notification), "next_cursor": nullable(str())}),
		"QueueStats": obj([]string{"queued", "running", "oldest_queued_age_seconds"}, map[string]any{
			"queued": integer(), "running": integer(), "oldest_queued_age_seconds": nullable(map[string]any{"type": "number"})}),
		"Workspace":      obj([]string{"id", "name"}, map[string]any{"id": str(), "name": str()}),
		"Tenant":         obj([]string{"id", "workspace_id", "name"}, map[string]any{"id": str(), "workspace_id": str(), "name": str()}),
		"UserWithToken":  obj([]string{"id", "email", "name", "token"}, map[string]any{"id": str(), "email": str(), "name": str(), "token": str()}),
		"Membership":     obj([]string{"user_id", "tenant_id", "role"}, map[string]any{"user_id": str(), "tenant_id": str(), "role": enum("owner", "operator", "auditor", "readonly")}),
		"Connection":     connection,
		"ConnectionList": obj([]string{"items"}, map[string]any{"items": array(connection)}),
		"RestoreRun": obj([]string{"id", "tenant_id", "name", "items", "previewed", "warnings", "previewed_at", "created_by", "created_at"},
			map[string]any{"id": str(), "tenant_id": str(), "name": str(), "items": array(map[string]any{}), "previewed": boolean(),
				"warnings": nullable(array(str())), "previewed_at": nullable(dateTime()), "created_by": str(), "created_at": dateTime()}),
		"NewWorkspace":  obj([]string{"name"}, map[string]any{"name": str()}),
		"NewTenant":     obj([]string{"workspace_id", "name"}, map[string]any{"workspace_id": str(), "name": str()}),
		"NewUser":       obj([]string{"email", "name"}, map[string]any{"email": str(), "name": str()}),
		"NewMembership": obj([]string{"user_id", "tenant_id", "role"}, map[string]any{"user_id": str(), "tenant_id": str(), "role": enum("owner", "operator", "auditor", "readonly")}),
		"NewConnection": obj([]string{"provider", "display_name"}, map[string]any{"provider": str(), "display_name": str(), "is_default": boolean(),
			"consent": enum("granted", "missing", "revoked"), "credentials": enum("valid", "expired", "invalid", "missing"),
			"enabled": boolean(), "simulation": nullable(simulation)}),
		"ConnectionPatch": obj([]string{}, map[string]any{"display_name": str(), "consent": enum("granted", "missing", "revoked"),
			"credentials": enum("valid", "expired", "invalid", "missing"), "enabled": boolean(), "simulation": nullable(simulation)}),
		"NewRestoreRun": obj([]string{"name", "items"}, map[string]any{"name": str(), "items": array(map[string]any{})}),
		"TenantStart":   obj([]string{}, map[string]any{"provider_connection_id": str()}),
		"RestoreStart":  obj([]string{"confirm"}, map[string]any{"provider_connection_id": str(), "confirm": boolean(), "acknowledge_warnings": boolean()}),
	}
}
