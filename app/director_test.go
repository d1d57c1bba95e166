package app

import (
	"errors"
	"testing"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/proxy"
)

// TestDirectKeepsTheRoutersSQLSTATE: a startup parameter the router refuses
// reaches the client with the code the router chose, as a FATAL.
func TestDirectKeepsTheRoutersSQLSTATE(t *testing.T) {
	d := &director{}
	d.cfg.Store(&configs.Config{})
	for _, tt := range []struct {
		name, options, want string
	}{
		{"unknown pgproxy setting", "-c pgproxy.maxlag=1s", pgerr.UndefinedObject},
		{"setting without a value", "-c pgproxy.max_lag", pgerr.ProtocolViolation},
		{"bad value", "-c pgproxy.max_lag=fast", pgerr.InvalidParameterValue},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.Direct(proxy.Listener{}, []proxy.Param{{Key: "user", Value: "u"}, {Key: "options", Value: tt.options}}, nil)
			var coded pgerr.Coded
			if !errors.As(err, &coded) {
				t.Fatalf("err = %v, want a coded error", err)
			}
			resp := pgerr.Response(err, pgerr.InternalError, "internal")
			if resp.Code != tt.want || resp.Severity != "FATAL" {
				t.Fatalf("client gets %s %s %q, want FATAL %s", resp.Severity, resp.Code, resp.Message, tt.want)
			}
		})
	}
}
