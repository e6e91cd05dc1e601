package quota

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed lua/common.lua
	luaCommon string
	//go:embed lua/reserve.lua
	luaReserve string
	//go:embed lua/finish.lua
	luaFinish string
	//go:embed lua/sweep.lua
	luaSweep string
	//go:embed lua/snapshot.lua
	luaSnapshot string
	//go:embed lua/reconcile.lua
	luaReconcile string
	//go:embed lua/limit.lua
	luaLimit string

	ledgerLibrary = newLuaLibrary("linkgate_quota", luaCommon,
		[2]string{"reserve", luaReserve}, [2]string{"finish", luaFinish}, [2]string{"sweep", luaSweep},
		[2]string{"snapshot", luaSnapshot}, [2]string{"reconcile", luaReconcile},
		[2]string{"limit", luaLimit})
)

// luaLibrary is the ledger's Lua as one Redis function library (Redis 7):
// the shared helpers are defined once, when the library loads, rather than
// on every call as EVAL would, and each operation is a function called with
// FCALL. The library's name and its functions' carry a digest of its code,
// so that replicas of different versions sharing one Redis each call their
// own.
type luaLibrary struct {
	name string            // <prefix>_<digest>
	fn   map[string]string // op -> its function, <name>_<op>
	code string            // what FUNCTION LOAD takes
}

// newLuaLibrary makes a library of the common code and the ops: each op's
// code defines a local function of its name, taking KEYS and ARGV as EVAL
// gives them, which the library registers as <name>_<op>.
func newLuaLibrary(prefix, common string, ops ...[2]string) luaLibrary {
	h := sha256.New()
	h.Write([]byte(common))
	for _, op := range ops {
		fmt.Fprintf(h, "\x00%s\x00%s", op[0], op[1])
	}
	l := luaLibrary{name: prefix + "_" + hex.EncodeToString(h.Sum(nil))[:12], fn: map[string]string{}}
	var b strings.Builder
	fmt.Fprintf(&b, "#!lua name=%s\n%s", l.name, common)
	for _, op := range ops {
		l.fn[op[0]] = l.name + "_" + op[0]
		fmt.Fprintf(&b, "\n%s\nredis.register_function('%s', %s)\n", op[1], l.fn[op[0]], op[0])
	}
	l.code = b.String()
	return l
}

// call runs op with FCALL, loading the library first where the server has
// not got it (a new server, or one restarted without persistence).
func (l luaLibrary) call(ctx context.Context, c redis.UniversalClient, op string, keys []string, args ...any) *redis.Cmd {
	cmd := c.FCall(ctx, l.fn[op], keys, args...)
	if isUnknownCommand(cmd.Err()) {
		cmd.SetErr(fmt.Errorf("%w (the ledger's functions need Redis 7 or later)", cmd.Err()))
	}
	if !isNoFunction(cmd.Err()) {
		return cmd
	}
	if err := l.load(ctx, c); err != nil {
		cmd = redis.NewCmd(ctx)
		cmd.SetErr(fmt.Errorf("loading the ledger's functions (Redis 7 or later is needed): %w", err))
		return cmd
	}
	return c.FCall(ctx, l.fn[op], keys, args...)
}

// load loads the library on every master: a function lives on the server
// that loaded it, and its replicas.
func (l luaLibrary) load(ctx context.Context, c redis.UniversalClient) error {
	load := func(ctx context.Context, c redis.Cmdable) error {
		err := c.FunctionLoad(ctx, l.code).Err()
		if err != nil && strings.Contains(err.Error(), "already exists") {
			return nil // another replica loaded it first
		}
		return err
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return load(ctx, m) })
	}
	return load(ctx, c)
}

func isNoFunction(err error) bool { return hasReplyPrefix(err, "ERR Function not found") }

func isUnknownCommand(err error) bool { return hasReplyPrefix(err, "ERR unknown command") }

func hasReplyPrefix(err error, prefix string) bool {
	if err == nil {
		return false
	}
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), prefix)
}
