// Argument readers for the exported functions. The TypeScript wrapper validates every argument
// first and gives the friendlier messages. These checks remain so that a direct caller of the
// addon cannot pass values that would make a system call read or write the wrong memory.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <string>

#include <napi.h>

namespace sigil {

// Bytes of a Uint8Array (a Node Buffer is one). The pointer stays valid while the array is alive.
struct ByteView {
	uint8_t *data;
	size_t size;
};

std::string ArgString(const Napi::CallbackInfo &info, size_t index, const char *name);

// Reads an integer argument in [min, max]. Throws TypeError if it is not an integer number and
// RangeError if it is outside the range.
int64_t ArgInteger(const Napi::CallbackInfo &info, size_t index, const char *name, int64_t min,
		   int64_t max);

// Reads a file descriptor argument: an integer from 0 to INT32_MAX.
int ArgFd(const Napi::CallbackInfo &info, size_t index, const char *name);

bool ArgBool(const Napi::CallbackInfo &info, size_t index, const char *name);

ByteView ArgBytes(const Napi::CallbackInfo &info, size_t index, const char *name);

Napi::Function ArgFunction(const Napi::CallbackInfo &info, size_t index, const char *name);

// Reads an optional integer property of an options object; returns `fallback` when the property
// is missing or undefined.
int64_t OptionInteger(Napi::Object options, const char *name, int64_t min, int64_t max,
		      int64_t fallback);

} // namespace sigil
