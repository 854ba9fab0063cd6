package httpapi

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"
)

// promError is an error answered in Prometheus' JSON error format.
type promError struct {
	Code int
	Type string
	Msg  string
}

func (e *promError) Error() string { return e.Msg }

func apiError(code int, typ, msg string) error { return &promError{Code: code, Type: typ, Msg: msg} }

type errorBody struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
}

// handleError answers every error, including echo's own 404 and 405, in
// Prometheus' JSON error format.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	pe := (*promError)(nil)
	if !errors.As(err, &pe) {
		he := (*echo.HTTPError)(nil)
		switch {
		case errors.As(err, &he) && he.Code == http.StatusNotFound:
			pe = &promError{http.StatusNotFound, "not_found", "not found: " + c.Request().URL.Path}
		case errors.As(err, &he) && he.Code == http.StatusMethodNotAllowed:
			pe = &promError{http.StatusMethodNotAllowed, "bad_data", "method not allowed"}
		case errors.As(err, &he):
			pe = &promError{he.Code, "internal", http.StatusText(he.Code)}
		default:
			s.opts.Logger.Error("request failed", "path", c.Request().URL.Path, "err", err)
			pe = &promError{http.StatusInternalServerError, "internal", err.Error()}
		}
	}
	if pe.Code == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", s.opts.Identify.Challenge())
	}
	_ = writeJSON(c, pe.Code, errorBody{Status: "error", ErrorType: pe.Type, Error: pe.Msg})
}
