#include "errors.h"

#include <errno.h>
#include <string.h>

#include <string>

#include <bpf/libbpf.h>

#include <napi.h>

namespace sigil {

namespace {

// The kernel's ENOTSUPP, which BPF system calls can return although it is not part of the
// user-space errno set, so libc has neither a name nor a description for it.
constexpr int kKernelEnotsupp = 524;

const char *LibbpfErrnoName(int err)
{
	switch (err) {
	case LIBBPF_ERRNO__LIBELF:
		return "LIBBPF_ERRNO__LIBELF";
	case LIBBPF_ERRNO__FORMAT:
		return "LIBBPF_ERRNO__FORMAT";
	case LIBBPF_ERRNO__KVERSION:
		return "LIBBPF_ERRNO__KVERSION";
	case LIBBPF_ERRNO__ENDIAN:
		return "LIBBPF_ERRNO__ENDIAN";
	case LIBBPF_ERRNO__INTERNAL:
		return "LIBBPF_ERRNO__INTERNAL";
	case LIBBPF_ERRNO__RELOC:
		return "LIBBPF_ERRNO__RELOC";
	case LIBBPF_ERRNO__LOAD:
		return "LIBBPF_ERRNO__LOAD";
	case LIBBPF_ERRNO__VERIFY:
		return "LIBBPF_ERRNO__VERIFY";
	case LIBBPF_ERRNO__PROG2BIG:
		return "LIBBPF_ERRNO__PROG2BIG";
	case LIBBPF_ERRNO__KVER:
		return "LIBBPF_ERRNO__KVER";
	case LIBBPF_ERRNO__PROGTYPE:
		return "LIBBPF_ERRNO__PROGTYPE";
	case LIBBPF_ERRNO__WRNGPID:
		return "LIBBPF_ERRNO__WRNGPID";
	case LIBBPF_ERRNO__INVSEQ:
		return "LIBBPF_ERRNO__INVSEQ";
	case LIBBPF_ERRNO__NLPARSE:
		return "LIBBPF_ERRNO__NLPARSE";
	default:
		return nullptr;
	}
}

} // namespace

std::string ErrnoName(int err)
{
	if (err == kKernelEnotsupp)
		return "ENOTSUPP";
	if (const char *name = LibbpfErrnoName(err))
		return name;
	// strerrorname_np is a GNU extension (glibc 2.32 and later).
	if (const char *name = strerrorname_np(err))
		return name;
	return "UNKNOWN";
}

std::string ErrnoText(int err)
{
	if (err == kKernelEnotsupp)
		return "Operation not supported";
	char buffer[256];
	// libbpf_strerror covers both errno values and libbpf's own codes.
	if (libbpf_strerror(err, buffer, sizeof(buffer)) == 0)
		return buffer;
	return "Unknown error " + std::to_string(err);
}

Napi::Error ErrnoError(Napi::Env env, const std::string &action, int err, const std::string &detail)
{
	std::string message =
		action + ": " + ErrnoText(err) + " (errno " + std::to_string(err) + ")";
	if (!detail.empty())
		message += "\n" + detail;
	Napi::Error error = Napi::Error::New(env, message);
	error.Set("errno", Napi::Number::New(env, err));
	error.Set("code", Napi::String::New(env, ErrnoName(err)));
	return error;
}

void ThrowErrno(Napi::Env env, const std::string &action, int err, const std::string &detail)
{
	throw ErrnoError(env, action, err, detail);
}

void ThrowTypeError(Napi::Env env, const std::string &message)
{
	throw Napi::TypeError::New(env, message);
}

void ThrowRangeError(Napi::Env env, const std::string &message)
{
	throw Napi::RangeError::New(env, message);
}

void ThrowError(Napi::Env env, const std::string &message)
{
	throw Napi::Error::New(env, message);
}

} // namespace sigil
