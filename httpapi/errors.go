package httpapi

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"
)

// errorType is the "errorType" of an error answer: Prometheus' v1 API set,
// plus the few kinds of refusal the proxy adds in front of it.
type errorType string

// Prometheus' own (web/api/v1), so clients branch on them as they do there.
const (
	errorBadData       errorType = "bad_data"
	errorExec          errorType = "execution"
	errorTimeout       errorType = "timeout"
	errorCanceled      errorType = "canceled"
	errorInternal      errorType = "internal"
	errorUnavailable   errorType = "unavailable"
	errorNotFound      errorType = "not_found"
	errorNotAcceptable errorType = "not_acceptable"
)

// The proxy's own refusals, before any query runs.
const (
	errorUnauthorized errorType = "unauthorized"
	errorForbidden    errorType = "forbidden"
)

// promError is an error answered in Prometheus' JSON error format.
type promError struct {
	Code int
	Type errorType
	Msg  string
	// Challenge is the WWW-Authenticate value of a 401; empty: the identifier's.
	Challenge string
}

func (e *promError) Error() string { return e.Msg }

func apiError(code int, typ errorType, msg string) error {
	return &promError{Code: code, Type: typ, Msg: msg}
}

type errorBody struct {
	Status    string    `json:"status"`
	ErrorType errorType `json:"errorType"`
	Error     string    `json:"error"`
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
			pe = &promError{Code: http.StatusNotFound, Type: errorNotFound, Msg: "not found: " + c.Request().URL.Path}
		case errors.As(err, &he) && he.Code == http.StatusMethodNotAllowed:
			pe = &promError{Code: http.StatusMethodNotAllowed, Type: errorBadData, Msg: "method not allowed"}
		case errors.As(err, &he):
			pe = &promError{Code: he.Code, Type: errorInternal, Msg: http.StatusText(he.Code)}
		default:
			s.opts.Logger.Error("request failed", "path", c.Request().URL.Path, "err", err)
			pe = &promError{Code: http.StatusInternalServerError, Type: errorInternal, Msg: err.Error()}
		}
	}
	if pe.Code == http.StatusUnauthorized {
		challenge := pe.Challenge
		if challenge == "" {
			challenge = s.opts.Identify.Challenge()
		}
		c.Response().Header().Set("WWW-Authenticate", challenge)
	}
	_ = writeJSON(c, pe.Code, errorBody{Status: "error", ErrorType: pe.Type, Error: pe.Msg})
}
