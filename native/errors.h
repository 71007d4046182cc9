// Errors thrown to JavaScript. Every failed system call or libbpf call becomes an Error whose
// message reads "<operation> <name>: <strerror> (errno N)" and that carries `errno` (number) and
// `code` (such as 'EPERM') properties, like the errors of Node's own fs module.
#pragma once

#include <string>

#include <napi.h>

namespace sigil {

// Returns the symbolic name of a positive errno value ("EPERM"), of a libbpf error code
// ("LIBBPF_ERRNO__VERIFY"), or "UNKNOWN".
std::string ErrnoName(int err);

// Returns the description of a positive errno value or libbpf error code, as strerror does.
std::string ErrnoText(int err);

// Builds the Error for a failed call. `action` is "<operation> <name>", `err` a positive errno
// value. `detail`, when not empty, is appended on the lines after the first one.
Napi::Error ErrnoError(Napi::Env env, const std::string &action, int err,
		       const std::string &detail = std::string());

// Throws ErrnoError(env, action, err, detail).
[[noreturn]] void ThrowErrno(Napi::Env env, const std::string &action, int err,
			     const std::string &detail = std::string());

// Throws a TypeError naming the argument and the type it must have.
[[noreturn]] void ThrowTypeError(Napi::Env env, const std::string &message);

// Throws a RangeError naming the argument and its accepted range.
[[noreturn]] void ThrowRangeError(Napi::Env env, const std::string &message);

// Throws a plain Error, used for calls made in the wrong state (such as on a closed object).
[[noreturn]] void ThrowError(Napi::Env env, const std::string &message);

} // namespace sigil
