package keys

import (
	"net/http"
	"strconv"
	"time"
)

// JWKSHandler returns the handler for GET /.well-known/jwks.json. It
// serves the public parts of the next, current and retired keys with
// Cache-Control: public, max-age=N, where N counts down to the next planned
// change of the key set and never exceeds Config.JWKSMaxAge. An unplanned
// change (Rotate) can therefore reach caches up to JWKSMaxAge late.
//
// It returns 503 before the first load and while the last load is older
// than Config.StaleAfter, because a replica that cannot reach the database
// may lack a next key that the other replicas already publish. Verifiers
// keep their last good key set meanwhile.
func (m *Manager) JWKSHandler() http.Handler {
	return http.HandlerFunc(m.serveJWKS)
}

func (m *Manager) serveJWKS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed: use GET", http.StatusMethodNotAllowed)
		return
	}

	s := m.loaded()
	if s == nil {
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "signing keys not loaded yet", http.StatusServiceUnavailable)
		return
	}
	now := m.cfg.now()
	if now.Sub(s.loadTime) > m.cfg.StaleAfter() {
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "signing keys are stale: no reload from the database succeeded recently; check the database connection", http.StatusServiceUnavailable)
		return
	}

	maxAge := jwksMaxAge(s.setChangeTime, now, m.cfg.JWKSMaxAge)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(s.jwks)))
	h.Set("Cache-Control", "public, max-age="+strconv.FormatInt(maxAge, 10))
	w.Write(s.jwks)
}

// jwksMaxAge returns the whole seconds from now until changeTime, between
// zero and maxAgeCap. Rounding down keeps a cache from holding the set past
// the change.
func jwksMaxAge(changeTime, now time.Time, maxAgeCap time.Duration) int64 {
	remaining := changeTime.Sub(now)
	if remaining <= 0 {
		return 0
	}
	return int64(min(remaining, maxAgeCap) / time.Second)
}
