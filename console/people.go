package console

import (
	"context"
	"html"
	"html/template"

	"github.com/opsgate/opsgate/domain"
)

// people names the actors a page shows: users by name, with their id on
// hover; workers, the system and unknown ids by their (shortened) id.
type people map[string]string

// Of is the HTML of actor id.
func (p people) Of(id string) template.HTML {
	if id == "" {
		return "—"
	}
	if name, ok := p[id]; ok {
		return template.HTML(`<span class="person" title="` + html.EscapeString(id) + `">` + html.EscapeString(name) + `</span>`)
	}
	return template.HTML(`<span class="mono" title="` + html.EscapeString(id) + `">` + html.EscapeString(shortID(id)) + `</span>`)
}

// By is the HTML of who started something: the user, and the integration
// the request came through ("<user> via <integration>").
func (p people) By(userID, via string) template.HTML {
	if via == "" {
		return p.Of(userID)
	}
	return p.Of(userID) + " via " + p.Of(via)
}

// shortID is an id cut to its first twelve characters, enough to tell
// ULIDs apart at a glance.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12] + "…"
	}
	return id
}

// people reads the names of the users and integrations ("integration:<id>")
// among ids.
func (c *Console) people(ctx context.Context, ids []string) (people, error) {
	names, err := c.d.Tenancy.UserNames(ctx, ids)
	if err != nil {
		return nil, err
	}
	var integrations []string
	for _, id := range ids {
		if in, ok := domain.IntegrationOf(id); ok {
			integrations = append(integrations, in)
		}
	}
	found, err := c.d.Tenancy.IntegrationNames(ctx, integrations)
	for id, name := range found {
		names[domain.ViaIntegration(id)] = name
	}
	return people(names), err
}
