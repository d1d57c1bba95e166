package configs

import (
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// seedDSN is what READ_REPLICA_DSN contributes for one replica.
type seedDSN struct {
	addr     string // host:port
	user     string
	password string
}

// parseReplicaDSNs parses READ_REPLICA_DSN: one DSN or a comma-separated
// list, each in URL form (postgres://user:pass@host:port/db) or key=value
// form (host=h port=5433 user=u password=p). Multi-host DSNs are not
// supported (the comma separates DSNs). Errors never repeat the input,
// which holds passwords.
func parseReplicaDSNs(raw string, p *problems) []seedDSN {
	var out []seedDSN
	parts := strings.Split(raw, ",")
	n := 0
	for _, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n++
		d, err := parseDSN(part)
		if err != nil {
			p.add(EnvReadReplicaDSN, "environment", "entry %d: %v", n, err)
			continue
		}
		out = append(out, d)
	}
	return out
}

func parseDSN(s string) (seedDSN, error) {
	var d seedDSN
	var host, port string
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		u, err := url.Parse(s)
		if err != nil {
			return d, errors.New("not a valid postgres:// URL")
		}
		host, port = u.Hostname(), u.Port()
		if u.User != nil {
			d.user = u.User.Username()
			d.password, _ = u.User.Password()
		}
		q := u.Query()
		if host == "" {
			host = q.Get("host")
		}
		if port == "" {
			port = q.Get("port")
		}
		if v := q.Get("user"); d.user == "" && v != "" {
			d.user = v
		}
		if v := q.Get("password"); d.password == "" && v != "" {
			d.password = v
		}
	} else if strings.Contains(s, "=") {
		kv, err := parseKeywordValue(s)
		if err != nil {
			return d, err
		}
		host, port, d.user, d.password = kv["host"], kv["port"], kv["user"], kv["password"]
		if host == "" {
			host = kv["hostaddr"]
		}
	} else {
		return d, errors.New("neither a postgres:// URL nor key=value pairs")
	}
	switch {
	case host == "":
		return d, errors.New("no host")
	case strings.HasPrefix(host, "/"):
		return d, errors.New("unix socket hosts are not supported, give host:port")
	}
	if port == "" {
		port = "5432"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return d, errors.New("port must be a number from 1 to 65535")
	}
	d.addr = net.JoinHostPort(host, port)
	if checkAddr(d.addr, false) != nil {
		return d, errors.New("bad host")
	}
	return d, nil
}

// parseKeywordValue parses libpq's keyword=value form: values may be
// single-quoted, with \' and \\ escapes, and spaces may surround "=".
func parseKeywordValue(s string) (map[string]string, error) {
	out := map[string]string{}
	i := 0
	skip := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
	}
	for {
		skip()
		if i >= len(s) {
			return out, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		key := s[start:i]
		skip()
		if i >= len(s) || s[i] != '=' || key == "" {
			return nil, errors.New("malformed key=value pairs")
		}
		i++ // '='
		skip()
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					val.WriteByte(s[i+1])
					i += 2
					continue
				}
				if c == '\'' {
					i++
					closed = true
					break
				}
				val.WriteByte(c)
				i++
			}
			if !closed {
				return nil, errors.New("unterminated quoted value")
			}
		} else {
			for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
		}
		out[key] = val.String()
	}
}
