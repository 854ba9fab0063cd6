package e2eproxy

import (
	"bytes"
	"io"
	"net/http"
)

// ForwardBuffered hands r to next (a reverse proxy in front of a backend)
// with its body read whole first. Streaming the body through fails at
// random: once the answer's headers are flushed, net/http may close the
// incoming body while the reverse proxy's transport still reads it (the
// backend answers remote read as soon as it has the bytes), and then drops
// the backend connection in the middle of the answer.
func ForwardBuffered(w http.ResponseWriter, r *http.Request, next http.Handler) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	next.ServeHTTP(w, r)
}
