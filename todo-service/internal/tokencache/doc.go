// Package tokencache keeps access tokens that have already been verified,
// so that the todo service checks each token's RS256 signature once
// instead of on every request.
//
// A Cache sits in front of a TokenVerifier, normally an
// *accesstoken.Verifier backed by the JWKS cache, in the offline token
// check mode. On a hit it returns a copy of the claims stored when the
// token was first verified. An entry is served only while all of these
// hold:
//
//   - the injected clock is before the token's exp claim (the clock skew
//     that the verifier allows after exp is not extended to entries);
//   - the key resolver still returns, for the kid in the token's header, a
//     key equal to the one it returned when the entry was stored. So an
//     entry is dropped once its key leaves the key set, is replaced, or
//     the key set becomes unavailable.
//
// Any other case is a miss: the token goes to the wrapped verifier and its
// error, if any, is returned unchanged. Errors are never cached, so
// accesstoken.ErrInvalidToken and accesstoken.ErrKeysUnavailable keep
// their meaning for the caller.
//
// # When to use it and what it costs
//
// Use it whenever tokens are verified offline. A hit costs a SHA-256 of the
// token, a map lookup under a per-shard mutex and one KeyResolver lookup,
// instead of an RSA verification. Memory is bounded by MaxEntries. Each
// entry contains the claims, the kid and a pointer to the public key. On
// amd64 that came to about 500 bytes of heap per entry for claims with
// 36-character sub, sid and jti values, so the default 10000 entries
// take about 5 MB.
//
// The cache adds no revocation delay of its own, but offline verification
// already has one. A token stays valid until its exp even when its session
// is revoked, because nothing on this path calls the auth service. Where a
// revoked session must stop working at once, use package introspect
// instead, at the price of one round trip to the auth service per request.
// Do not put a Cache in front of an introspect verifier, because serving a
// revoked token from the cache would undo what introspection is for.
//
// Entries are keyed by the SHA-256 of the whole token, so the cache never
// stores a token itself.
package tokencache
