// Package console is the operator console: server-rendered pages at
// /console/ for operators and auditors. It signs users in with their
// bearer token (exchanged for a session cookie), protects every form with
// the session's CSRF token, and reads and acts through the same
// application services and projections as the API, with the same 404/403
// rules and the one presenter's words.
package console

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/opsgate/opsgate/api"
	"github.com/opsgate/opsgate/audit"
	"github.com/opsgate/opsgate/connections"
	"github.com/opsgate/opsgate/domain"
	"github.com/opsgate/opsgate/eventstore"
	"github.com/opsgate/opsgate/gate"
	"github.com/opsgate/opsgate/onboarding"
	"github.com/opsgate/opsgate/projections"
	"github.com/opsgate/opsgate/restores"
	"github.com/opsgate/opsgate/tenancy"
	"github.com/opsgate/opsgate/tokens"
	"github.com/opsgate/opsgate/webhooks"
)

//go:embed templates static
var files embed.FS

const (
	// Prefix is where the console is served.
	Prefix = "/console"
	// StreamPath is the Operations view's server-sent events: no request
	// deadline bounds it.
	StreamPath = Prefix + "/operations/stream"

	sessionCookie = "opsgate_console"
	signInCookie  = "opsgate_signin"
)

// Deps are what the console reads and acts through.
type Deps struct {
	// Pool keeps the console's sessions.
	Pool        *pgxpool.Pool
	Tokens      *tokens.Service
	Tenancy     *tenancy.Service
	Connections *connections.Service
	Gate        *gate.Service
	Restores    *restores.Service
	Onboarding  *onboarding.Service
	Reader      *projections.Reader
	Store       *eventstore.Store
	// Webhooks shows a workspace's webhook endpoints and their deliveries
	// to its owners, and sends a delivery again.
	Webhooks *webhooks.Service
	// Changes returns a channel closed at the next commit of changes
	// (changes.Topic), which commit with the projections: the live
	// updates of the Operations view and of a run's page.
	Changes func() <-chan struct{}
	// Draining is closed when the server starts draining: a run's page
	// waiting on the run is answered at once.
	Draining <-chan struct{}
	// SessionTTL is how long a session lasts (default 8h).
	SessionTTL time.Duration
	Logger     *slog.Logger
}

// Console serves the console pages.
type Console struct {
	d        Deps
	history  *audit.History
	sessions *sessions
	pages    map[string]*template.Template
}

var pageFiles = []string{"sign-in", "operations", "run", "connections", "outcome", "audit", "problem", "restores", "onboarding", "webhooks", "cancel"}

// New parses the console's pages.
func New(d Deps) (*Console, error) {
	if d.SessionTTL <= 0 {
		d.SessionTTL = 8 * time.Hour
	}
	c := &Console{d: d, history: audit.NewHistory(d.Store), sessions: &sessions{pool: d.Pool, ttl: d.SessionTTL},
		pages: map[string]*template.Template{}}
	for _, name := range pageFiles {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/starts.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		c.pages[name] = t
	}
	return c, nil
}

// Register serves the console on e.
func (c *Console) Register(e *echo.Echo) {
	static, _ := fs.Sub(files, "static")
	e.GET(Prefix, func(ec echo.Context) error { return ec.Redirect(http.StatusSeeOther, Prefix+"/operations") })
	g := e.Group(Prefix)
	g.GET("/static/*", echo.WrapHandler(http.StripPrefix(Prefix+"/static/", staticFiles(static))))
	g.GET("/sign-in", c.page(c.signInForm))
	g.POST("/sign-in", c.page(c.signIn))
	in := g.Group("", c.requireSession)
	in.GET("/", func(ec echo.Context) error { return ec.Redirect(http.StatusSeeOther, Prefix+"/operations") })
	in.POST("/sign-out", c.page(c.form(c.signOut)))
	in.GET("/operations", c.page(c.operations))
	in.GET("/operations/rows", c.page(c.operationRows))
	in.GET("/operations/stream", c.page(c.operationStream))
	in.GET("/operations/:runId", c.page(c.run))
	in.GET("/operations/:runId/wait", c.page(c.runWait))
	in.POST("/operations/cancel", c.page(c.form(c.cancelSelected)))
	in.POST("/operations/:runId/cancel", c.page(c.form(c.cancel)))
	in.POST("/operations/:runId/rerun", c.page(c.form(c.rerun)))
	in.GET("/connections/:connectionId", c.page(c.connection))
	in.GET("/tenants/:tenantId/connections", c.page(c.connections))
	in.POST("/start", c.page(c.form(c.start)))
	in.GET("/tenants/:tenantId/audit", c.page(c.auditTrail))
	in.GET("/tenants/:tenantId/audit/export", c.page(c.auditExport))
	in.GET("/tenants/:tenantId/audit/checkpoint", c.page(c.auditCheckpointNote))
	in.GET("/tenants/:tenantId/audit/proof", c.page(c.auditProof))
	in.GET("/tenants/:tenantId/restores", c.page(c.restoreRuns))
	in.POST("/restores", c.page(c.form(c.createRestoreRun)))
	in.POST("/restores/:restoreRunId/preview", c.page(c.form(c.previewRestoreRun)))
	in.POST("/restores/:restoreRunId/execute", c.page(c.form(c.executeRestoreRun)))
	in.GET("/tenants/:tenantId/onboarding", c.page(c.onboardingSessions))
	in.POST("/onboarding", c.page(c.form(c.createOnboardingSession)))
	in.POST("/onboarding/:sessionId/:step", c.page(c.form(c.onboardingStep)))
	in.GET("/workspaces/:workspaceId/webhooks", c.page(c.webhookEndpoints))
	in.POST("/webhooks/:endpointId/deliveries/:deliveryId/replay", c.page(c.form(c.replayDelivery)))
}

// staticFiles serves the embedded stylesheet and script, cached briefly.
func staticFiles(fsys fs.FS) http.Handler {
	h := http.FileServer(http.FS(fsys))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		h.ServeHTTP(w, r)
	})
}

// page adapts a console handler: an error becomes a page in the API's
// words (api.ProblemOf), never the API's JSON.
func (c *Console) page(fn echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		err := fn(ec)
		if err == nil {
			return nil
		}
		p := api.ProblemOf(err)
		if p == nil {
			c.d.Logger.ErrorContext(ec.Request().Context(), "console request failed", "err", err,
				"request_id", api.RequestID(ec.Request().Context()))
			p = &api.Problem{Status: http.StatusInternalServerError, Code: "internal", Title: "Something went wrong",
				Detail: "Something went wrong on our side; quote request id " + api.RequestID(ec.Request().Context()) + "."}
		}
		if ec.Response().Committed {
			return nil
		}
		return c.render(ec, p.Status, "problem", p.Title, p)
	}
}

// requireSession lets signed-in users through; anyone else is sent to the
// sign-in page.
func (c *Console) requireSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		cookie, err := ec.Cookie(sessionCookie)
		if err == nil {
			s, err := c.sessions.lookup(ec.Request().Context(), cookie.Value)
			if err == nil {
				// A disabled user's sessions end at once.
				var active bool
				if active, err = c.d.Tenancy.Active(ec.Request().Context(), s.UserID); err == nil && !active {
					err = errNoSession
				}
			}
			if err == nil {
				ec.Set("session", s)
				return next(ec)
			}
			if !errors.Is(err, errNoSession) {
				return c.page(func(echo.Context) error { return err })(ec)
			}
		}
		// Requests of scripts (live updates) and forms are answered 401, not
		// sent to the sign-in page.
		if ec.Request().Method != http.MethodGet || strings.HasSuffix(ec.Path(), "/stream") || strings.HasSuffix(ec.Path(), "/rows") ||
			strings.HasSuffix(ec.Path(), "/wait") {
			return c.render(ec, http.StatusUnauthorized, "problem", "Signed out",
				&api.Problem{Status: http.StatusUnauthorized, Code: "unauthorized", Title: "Signed out", Detail: "Sign in again to continue."})
		}
		return ec.Redirect(http.StatusSeeOther, Prefix+"/sign-in?next="+urlQueryEscape(ec.Request().URL.RequestURI()))
	}
}

// form checks a state-changing form's CSRF token against the session's.
func (c *Console) form(fn echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		s := sessionOf(ec)
		got := ec.FormValue("csrf")
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) != 1 {
			return c.render(ec, http.StatusForbidden, "problem", "Form refused", &api.Problem{Status: http.StatusForbidden,
				Code: "csrf", Title: "Form refused", Detail: "This form did not come from your console session (its CSRF token is missing or stale). Reload the page and try again."})
		}
		return fn(ec)
	}
}

func sessionOf(ec echo.Context) session {
	s, _ := ec.Get("session").(session)
	return s
}

func actorOf(ec echo.Context) domain.Actor {
	return domain.Actor{ID: sessionOf(ec).UserID, RequestID: api.RequestID(ec.Request().Context())}
}

// view is what every page's layout shows.
type view struct {
	Title    string
	SignedIn bool
	CSRF     string
	Tenants  []tenancy.MemberOf
	Page     any
}

// render answers page with status; signed-in pages carry the navigation.
func (c *Console) render(ec echo.Context, status int, page, title string, data any) error {
	v := view{Title: title, Page: data}
	if s := sessionOf(ec); s.UserID != "" {
		v.SignedIn, v.CSRF = true, s.CSRF
		tenants, err := c.d.Tenancy.Memberships(ec.Request().Context(), actorOf(ec))
		if err != nil {
			return err
		}
		v.Tenants = tenants
	}
	var buf bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&buf, "layout.html", v); err != nil {
		return fmt.Errorf("render %s: %w", page, err)
	}
	h := ec.Response().Header()
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	return ec.HTMLBlob(status, buf.Bytes())
}

// fragment answers one template of a page alone (the Operations rows).
func (c *Console) fragment(ec echo.Context, page, name string, data any) ([]byte, error) {
	var buf bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&buf, name, data); err != nil {
		return nil, fmt.Errorf("render %s/%s: %w", page, name, err)
	}
	return buf.Bytes(), nil
}

func (c *Console) ctx(ec echo.Context) context.Context { return ec.Request().Context() }
