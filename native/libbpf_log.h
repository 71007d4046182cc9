// Keeps recent libbpf messages so that errors can quote them. libbpf prints through one
// process-wide callback. The addon's callback never prints: it appends each line to a buffer
// owned by the calling thread, so each JavaScript thread gets only the messages of its own calls.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <string>

namespace sigil {

// Installs the callback with libbpf_set_print. Safe to call more than once.
void InstallLibbpfLogger();

// Returns a position in this thread's message stream, to pass to LibbpfLogSince later.
uint64_t LibbpfLogMark();

// Returns up to `max_lines` of the latest lines this thread logged after `mark`, joined with
// newlines, or an empty string when there are none. The buffer keeps the last 256 lines, so a
// larger `max_lines` returns at most that many.
std::string LibbpfLogSince(uint64_t mark, size_t max_lines);

} // namespace sigil
