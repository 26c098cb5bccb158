package webhook

import (
	"net/http"
	"testing"
	"time"
)

// FuzzVerify: no header values make Verify panic, and only a signature made with
// the secret verifies.
func FuzzVerify(f *testing.F) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	f.Add("msg_1", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`))
	f.Add("", "x", "v1,", []byte{})
	f.Add("id", "-1", "v2,abc v1,=== v1", []byte("b"))
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sig)
		if Verify(body, h, 0, secret) != nil {
			return
		}
		// It verified: the same signature must be what Sign makes.
		var sec int64
		for _, c := range ts {
			if c < '0' || c > '9' {
				t.Fatalf("a non-numeric timestamp %q verified", ts)
			}
			sec = sec*10 + int64(c-'0')
		}
		want, err := Sign(id, time.Unix(sec, 0), body, secret)
		if err != nil || !containsField(sig, want) {
			t.Fatalf("signature %q verified but Sign gives %q (%v)", sig, want, err)
		}
	})
}

func containsField(list, s string) bool {
	for start := 0; start <= len(list); {
		end := start
		for end < len(list) && list[end] != ' ' {
			end++
		}
		if list[start:end] == s {
			return true
		}
		start = end + 1
	}
	return false
}
