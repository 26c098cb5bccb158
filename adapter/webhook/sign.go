package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks headers (https://www.standardwebhooks.com).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

const secretPrefix = "whsec_"

// Errors returned by Verify.
var (
	ErrMissingHeaders     = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature header")
	ErrInvalidTimestamp   = errors.New("webhook: invalid webhook-timestamp")
	ErrTimestampTolerance = errors.New("webhook: webhook-timestamp outside tolerance")
	ErrNoMatchingSig      = errors.New("webhook: no matching signature")
)

// Sign returns the webhook-signature header value for a message: one
// "v1,<base64 HMAC-SHA256 of id.timestamp.payload>" per secret, separated
// by spaces. Secrets are "whsec_" followed by base64 (the prefix is
// optional). Errors never contain the secret.
func Sign(msgID string, timestamp time.Time, payload []byte, secrets ...string) (string, error) {
	keys, err := decodeSecrets(secrets)
	if err != nil {
		return "", err
	}
	return sign(keys, msgID, timestamp.Unix(), payload), nil
}

// Verify checks a request signed per Standard Webhooks: the
// webhook-signature header must hold a v1 signature made with one of
// secrets over the webhook-id, webhook-timestamp and payload. With
// tolerance > 0 the timestamp must be within tolerance of now, which
// rejects replayed requests; receivers should pass a few minutes.
// tolerance <= 0 skips that check.
func Verify(payload []byte, header http.Header, tolerance time.Duration, secrets ...string) error {
	id, ts, sigs := header.Get(HeaderID), header.Get(HeaderTimestamp), header.Get(HeaderSignature)
	if id == "" || ts == "" || sigs == "" {
		return ErrMissingHeaders
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrInvalidTimestamp
	}
	if tolerance > 0 {
		if d := time.Since(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
			return fmt.Errorf("%w: %s old", ErrTimestampTolerance, d.Round(time.Second))
		}
	}
	keys, err := decodeSecrets(secrets)
	if err != nil {
		return err
	}
	for _, key := range keys {
		want := sign([][]byte{key}, id, unix, payload)
		for _, got := range strings.Fields(sigs) {
			if hmac.Equal([]byte(got), []byte(want)) {
				return nil
			}
		}
	}
	return ErrNoMatchingSig
}

func sign(keys [][]byte, msgID string, unix int64, payload []byte) string {
	var b strings.Builder
	for i, key := range keys {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msgID))
		m.Write([]byte{'.'})
		m.Write(strconv.AppendInt(nil, unix, 10))
		m.Write([]byte{'.'})
		m.Write(payload)
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(m.Sum(nil)))
	}
	return b.String()
}

func decodeSecrets(secrets []string) ([][]byte, error) {
	if len(secrets) == 0 {
		return nil, errors.New("webhook: no secret")
	}
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		k, err := decodeSecret(s)
		if err != nil {
			return nil, fmt.Errorf("webhook: secret %d: %w", i, err)
		}
		keys[i] = k
	}
	return keys, nil
}

// decodeSecret strips the "whsec_" prefix and decodes the base64 rest. The
// error tells nothing about the secret's content.
func decodeSecret(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, secretPrefix))
	if err != nil || len(k) == 0 {
		return nil, errors.New(`not "whsec_" followed by non-empty base64`)
	}
	return k, nil
}
