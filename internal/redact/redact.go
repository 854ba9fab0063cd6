// Package redact is the one place that turns a backend URL into what may be
// printed: in logs, errors, debug pages and metrics labels alike.
package redact

import (
	"net/url"
	"strings"
)

// URL hides the password of a URL with credentials; a string that is not a
// URL is hidden whole after its scheme, since it may hold one anyway.
func URL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		scheme, _, _ := strings.Cut(s, "://")
		return scheme + "://(unparsable URL)"
	}
	return u.Redacted()
}
