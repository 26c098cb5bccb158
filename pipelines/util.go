package pipelines

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
)

func typeOf[T any]() reflect.Type { return reflect.TypeOf((*T)(nil)).Elem() }

// checkHostPort accepts "host:port" with a numeric port ("" host means every
// interface).
func checkHostPort(addr string) error {
	if strings.Contains(addr, "://") {
		return fmt.Errorf("%q: want host:port, without a scheme", addr)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port", addr)
	}
	if port == "" {
		return errors.New("port missing in " + addr)
	}
	return nil
}
