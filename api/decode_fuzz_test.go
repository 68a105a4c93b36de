package api

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/opsgate/opsgate/domain"
)

// decodeErrorOK: decoders answer a *badRequest (or a 413's
// *http.MaxBytesError), never any other error.
func decodeErrorOK(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var bad *badRequest
	var tooLarge *http.MaxBytesError
	if !errors.As(err, &bad) && !errors.As(err, &tooLarge) {
		t.Fatalf("error %T %v is neither *badRequest nor *http.MaxBytesError", err, err)
	}
	if bad != nil && (bad.code == "" || bad.detail == "" || bad.status() < 400 || bad.status() > 499) {
		t.Fatalf("badRequest %+v lacks code or detail, or is no 4xx", bad)
	}
}

var fuzzSurfaces = []domain.Surface{
	domain.SurfaceTenantVerification, domain.SurfaceGroupsSync, domain.SurfaceRoleDefinitionsSync,
	domain.SurfaceRestoreExecute, domain.SurfaceConnectionCheck, domain.SurfaceInventorySync,
	domain.SurfaceComplianceSnapshot,
}

func FuzzDecodeStartBody(f *testing.F) {
	id := ulid.Make().String()
	for _, seed := range []string{
		``, `{}`, ` { } `, `{"provider_connection_id":"` + id + `"}`,
		`{"provider_connection_id":"` + strings.ToLower(id) + `"}`, `{"provider_connection_id":""}`,
		`{"provider_connection_id":null}`, `{"confirm":true,"acknowledge_warnings":true}`,
		`{"confirm":true,"provider_connection_id":"` + id + `"}`, `{"confirm":"yes"}`, `{"confirm":1}`,
		`{"provider_connection_id":5}`, `{"provider_connection_id":"nope"}`, `{"unknown":1}`,
		`{"PROVIDER_CONNECTION_ID":"` + id + `"}`, `[]`, `null`, `"x"`, `1`, `{`, `{"a":}`, `{} {}`, `{}]`,
		`{"confirm":true,"confirm":false}`, "\xff\xfe", `{"provider_connection_id":"\u0000"}`,
		`{"confirm":1e999}`, `{"provider_connection_id":{"a":[1,2,{}]}}`, strings.Repeat(`{"a":`, 10000),
	} {
		for i := range fuzzSurfaces {
			f.Add(uint8(i), []byte(seed))
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, raw []byte) {
		surface := fuzzSurfaces[int(which)%len(fuzzSurfaces)]
		b, err := decodeStartBody(surface, raw)
		decodeErrorOK(t, err)
		if err != nil {
			return
		}
		if b.ProviderConnectionID != nil {
			if surface.Scope != "tenant" {
				t.Fatalf("%s accepted provider_connection_id", surface.Name)
			}
			if _, err := ulid.ParseStrict(*b.ProviderConnectionID); err != nil || *b.ProviderConnectionID != strings.ToUpper(*b.ProviderConnectionID) {
				t.Fatalf("accepted provider_connection_id %q", *b.ProviderConnectionID)
			}
		}
		if surface.Operation != domain.OpRestoreExecute && (b.Confirm != nil || b.AcknowledgeWarnings != nil) {
			t.Fatalf("%s accepted restore safeguards", surface.Name)
		}
	})
}

func FuzzDecodeConnection(f *testing.F) {
	for _, seed := range []string{
		`{"provider":"simulated","display_name":"X"}`,
		`{"provider":"simulated","display_name":"X","is_default":true,"consent":"granted","credentials":"valid","enabled":false}`,
		`{"provider":"simulated","display_name":"X","simulation":{"latency_ms":10,"fail_with":"provider.throttled","throttle_times":2}}`,
		`{"provider":"simulated","display_name":"X","simulation":null}`,
		`{"simulation":{"latency_ms":"x"}}`, `{"simulation":{"latency_ms":1e99}}`, `{"simulation":{"latency_ms":-1}}`,
		`{"simulation":{"explode":true}}`, `{"simulation":[]}`, `{"enabled":"yes"}`, `{"is_default":null}`,
		`{"display_name":"Y"}`, `{"consent":"revoked","credentials":"expired"}`, `{"display_name":null}`,
		`{"tenant_id":"x"}`, ``, `   `, `[]`, `null`, `{`, `{}x`, `{"a":1,}`, "\x00", `{"display_name":"\ud800"}`,
		strings.Repeat(`[`, 10000),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, err := decodeConnection(raw)
		decodeErrorOK(t, err)
		p, err := decodeConnectionPatch(raw)
		decodeErrorOK(t, err)
		if err == nil && p.Simulation != nil && !p.SetSimulation {
			t.Fatalf("patch has simulation settings without SetSimulation")
		}
	})
}
