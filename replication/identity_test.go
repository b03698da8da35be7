package replication

import (
	"errors"
	"strings"
	"testing"
)

func TestIdentityUsable(t *testing.T) {
	cases := []struct {
		kind, indexed string
		usable        bool
		why           string
	}{
		{"f", "false", true, ""},
		{"d", "true", true, ""},
		{"d", "false", false, "REPLICA IDENTITY DEFAULT and no primary key"},
		{"i", "true", true, ""},
		{"i", "false", false, "REPLICA IDENTITY USING INDEX, whose index was dropped"},
		{"n", "false", false, "REPLICA IDENTITY NOTHING"},
		{"", "false", false, "REPLICA IDENTITY NOTHING"},
	}
	for _, c := range cases {
		id := ParseIdentity("public.t", c.kind, c.indexed)
		if id.Usable() != c.usable {
			t.Errorf("%s/%s: usable = %v, want %v", c.kind, c.indexed, id.Usable(), c.usable)
		}
		if !c.usable && id.why() != c.why {
			t.Errorf("%s/%s: why = %q, want %q", c.kind, c.indexed, id.why(), c.why)
		}
	}
}

func TestIdentityErrorSaysWhatFailsAndTheFix(t *testing.T) {
	nopk := Identity{Table: "public.nopk", Kind: 'd'}
	cases := []struct {
		name string
		err  IdentityError
		want []string
	}{
		{"added", IdentityError{Publication: "cdcd", Update: true, Delete: true, Tables: []Identity{nopk}}, []string{
			"table public.nopk has no usable replica identity (REPLICA IDENTITY DEFAULT and no primary key)",
			"adding it to publication cdcd, which publishes updates and deletes, would make every UPDATE and DELETE the application runs on it fail",
			"Fix: ALTER TABLE public.nopk REPLICA IDENTITY FULL, or add a primary key",
		}},
		{"member, deletes only", IdentityError{Publication: "p", Delete: true, Member: true,
			Tables: []Identity{{Table: "s.t", Kind: 'n'}}}, []string{
			"it is in publication p, which publishes deletes, so every DELETE the application runs on it fails",
			"Fix: ALTER TABLE s.t REPLICA IDENTITY FULL, or give it a primary key and REPLICA IDENTITY DEFAULT",
		}},
		{"two tables", IdentityError{Publication: "cdcd", Update: true, Tables: []Identity{nopk, {Table: "public.x", Kind: 'i'}}}, []string{
			"table public.nopk has", "; table public.x has no usable replica identity (REPLICA IDENTITY USING INDEX, whose index was dropped)",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := c.err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q:\n%s", w, msg)
				}
			}
			if !errors.Is(&c.err, ErrConfig) || IsRetryable(&c.err) {
				t.Error("an identity error is not a configuration error")
			}
		})
	}
}

func TestIdentityQueryQuotesTableNames(t *testing.T) {
	q := IdentityQuery([]string{"public.it's"})
	if !strings.Contains(q, `ARRAY['public.it''s']::text[]`) {
		t.Errorf("table names are not quoted as literals:\n%s", q)
	}
}
