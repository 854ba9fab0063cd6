package httpapi

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"
)

// Explainer says, for a query under the request's tenant, what the backends
// would evaluate and what the proxy, and why.
type Explainer interface {
	ExplainQuery(ctx context.Context, qs string) (string, error)
}

// explainOr answers a query request carrying explain=true with its plan
// instead of running it; other requests go to next.
func (s *Server) explainOr(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.opts.Explain == nil || c.FormValue("explain") != "true" {
			return next(c)
		}
		text, err := s.opts.Explain.ExplainQuery(c.Request().Context(), c.FormValue("query"))
		if err != nil {
			return apiError(http.StatusBadRequest, errorBadData, err.Error())
		}
		return c.JSON(http.StatusOK, map[string]any{"status": "success", "data": map[string]string{"explain": text}})
	}
}
