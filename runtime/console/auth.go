package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"
)

// MinTokenLength is the shortest token [TokenAuth] accepts.
const MinTokenLength = 16

// TokenAuth returns an authorizer for Options.Authorize that accepts the
// requests carrying token: as "Authorization: Bearer TOKEN", or as the
// password of HTTP Basic authentication, which is what a browser sends
// once its user typed it in the login prompt. The user's name is the Basic
// user name (clipped to 64 printable characters; what the operator typed,
// since the token is shared) or "token". Tokens are compared in constant
// time. A token shorter than MinTokenLength is an error.
func TokenAuth(token string) (func(*http.Request) (string, bool), error) {
	if len(token) < MinTokenLength {
		return nil, fmt.Errorf("console: TokenAuth: the token has %d bytes, fewer than %d", len(token), MinTokenLength)
	}
	want := sha256.Sum256([]byte(token))
	equal := func(got string) bool {
		// Hashes, so that the comparison does not reveal the length.
		g := sha256.Sum256([]byte(got))
		return subtle.ConstantTimeCompare(g[:], want[:]) == 1
	}
	return func(r *http.Request) (string, bool) {
		if user, pass, ok := r.BasicAuth(); ok {
			if !equal(pass) {
				return "", false
			}
			if user = cleanUser(user); user == "" {
				user = "token"
			}
			return user, true
		}
		auth := r.Header.Get("Authorization")
		if len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") && equal(auth[7:]) {
			return "token", true
		}
		return "", false
	}, nil
}

// NewToken returns a random token for [TokenAuth]: 32 bytes, base64url.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// cleanUser keeps a user name printable and short for the audit log.
func cleanUser(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	if r := []rune(s); len(r) > 64 {
		s = string(r[:64])
	}
	return strings.TrimSpace(s)
}

type userKey struct{}

func withUser(ctx context.Context, user string) context.Context {
	return context.WithValue(ctx, userKey{}, user)
}

func userOf(ctx context.Context) string {
	u, _ := ctx.Value(userKey{}).(string)
	return u
}

// csrfCookie is the cookie that binds CSRF tokens to one browser.
const csrfCookie = "eventgen_console_csrf"

// csrfToken returns the token the forms of r's pages carry: an HMAC of the
// browser's cookie and the user, setting the cookie if r has none.
func (c *Console) csrfToken(w http.ResponseWriter, r *http.Request) string {
	ck, err := r.Cookie(csrfCookie)
	value := ""
	if err == nil && len(ck.Value) >= 32 {
		value = ck.Value
	} else {
		value = NewToken()
		http.SetCookie(w, &http.Cookie{
			Name: csrfCookie, Value: value, Path: c.opts.Prefix + "/",
			HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
		})
	}
	return c.sign(value, userOf(r.Context()))
}

func (c *Console) sign(cookie, user string) string {
	m := hmac.New(sha256.New, c.csrfKey)
	m.Write([]byte("eventgen console csrf\x00"))
	m.Write([]byte(cookie))
	m.Write([]byte{0})
	m.Write([]byte(user))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkPost refuses a state-changing request that comes from another
// origin, or whose form lacks the token of its cookie and user.
func (c *Console) checkPost(r *http.Request) error {
	if err := c.origin.Check(r); err != nil {
		return errors.New("the request came from another origin")
	}
	ck, err := r.Cookie(csrfCookie)
	if err != nil || ck.Value == "" {
		return errors.New("the request has no CSRF cookie: reload the page")
	}
	got := r.PostFormValue("csrf")
	if got == "" || !hmac.Equal([]byte(got), []byte(c.sign(ck.Value, userOf(r.Context())))) {
		return errors.New("the CSRF token is missing or wrong: reload the page")
	}
	return nil
}
