package webhook

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test vector from the Standard Webhooks specification.
const (
	vectorID   = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTS   = 1614265330
	vectorBody = `{"test": 2432232314}`
	vectorSig  = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func vectorHeader(sig string) http.Header {
	h := http.Header{}
	h.Set(HeaderID, vectorID)
	h.Set(HeaderTimestamp, "1614265330")
	h.Set(HeaderSignature, sig)
	return h
}

func TestSignTestVector(t *testing.T) {
	got, err := Sign(vectorID, time.Unix(vectorTS, 0), []byte(vectorBody), testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got != vectorSig {
		t.Fatalf("Sign = %q, want %q", got, vectorSig)
	}
	if err := Verify([]byte(vectorBody), vectorHeader(vectorSig), 0, testSecret); err != nil {
		t.Fatalf("Verify of the spec vector: %v", err)
	}
}

func TestVerifyRejects(t *testing.T) {
	other := "whsec_" + "c2VjcmV0LXR3by1mb3ItdGVzdHM=" // base64("secret-two-for-tests")
	tests := []struct {
		name      string
		body      string
		header    http.Header
		tolerance time.Duration
		secrets   []string
		want      error
	}{
		{"tampered body", `{"test": 1}`, vectorHeader(vectorSig), 0, []string{testSecret}, ErrNoMatchingSig},
		{"wrong secret", vectorBody, vectorHeader(vectorSig), 0, []string{other}, ErrNoMatchingSig},
		{"old timestamp", vectorBody, vectorHeader(vectorSig), 5 * time.Minute, []string{testSecret}, ErrTimestampTolerance},
		{"missing headers", vectorBody, http.Header{}, 0, []string{testSecret}, ErrMissingHeaders},
		{"bad timestamp", vectorBody, func() http.Header {
			h := vectorHeader(vectorSig)
			h.Set(HeaderTimestamp, "yesterday")
			return h
		}(), 0, []string{testSecret}, ErrInvalidTimestamp},
		{"v2 scheme ignored", vectorBody, vectorHeader("v2," + strings.TrimPrefix(vectorSig, "v1,")), 0, []string{testSecret}, ErrNoMatchingSig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify([]byte(tt.body), tt.header, tt.tolerance, tt.secrets...)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSignRotationAndTolerance(t *testing.T) {
	newSecret := "whsec_" + "c2VjcmV0LXR3by1mb3ItdGVzdHM="
	now := time.Now()
	sig, err := Sign("msg_1", now, []byte("body"), testSecret, newSecret)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(strings.Fields(sig)); n != 2 {
		t.Fatalf("two secrets gave %d signatures: %q", n, sig)
	}
	h := http.Header{}
	h.Set(HeaderID, "msg_1")
	h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(HeaderSignature, sig)
	// A receiver that knows only one of the secrets accepts the request.
	for _, s := range []string{testSecret, newSecret} {
		if err := Verify([]byte("body"), h, 5*time.Minute, s); err != nil {
			t.Errorf("Verify with one rotated secret: %v", err)
		}
	}
	// The prefix is optional.
	if err := Verify([]byte("body"), h, 5*time.Minute, strings.TrimPrefix(testSecret, "whsec_")); err != nil {
		t.Errorf("Verify without whsec_ prefix: %v", err)
	}
}

func TestSignBadSecretIsNotQuoted(t *testing.T) {
	bad := "whsec_not*base64*TOPSECRET"
	_, err := Sign("id", time.Now(), nil, bad)
	if err == nil {
		t.Fatal("Sign accepted a secret that is not base64")
	}
	if strings.Contains(err.Error(), "TOPSECRET") {
		t.Fatalf("error leaks the secret: %v", err)
	}
}
