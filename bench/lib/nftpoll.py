# libnftables through ctypes: `nft` commands run in this process (no process per poll),
# so the network bench can watch a host's ruleset every millisecond at almost no cost.
import ctypes

_lib = ctypes.CDLL("libnftables.so.1")
_lib.nft_ctx_new.restype = ctypes.c_void_p
_lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
_lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
_lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
_lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
_lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
_lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
_lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]


class Nft:
    def __init__(self):
        self.ctx = _lib.nft_ctx_new(0)
        _lib.nft_ctx_buffer_output(self.ctx)
        _lib.nft_ctx_buffer_error(self.ctx)

    def run(self, cmd):
        """The command's output, or "" when it failed (e.g. the table does not exist yet)."""
        rc = _lib.nft_run_cmd_from_buffer(self.ctx, cmd.encode())
        out = (_lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode()
        _lib.nft_ctx_get_error_buffer(self.ctx)
        return out if rc == 0 else ""
