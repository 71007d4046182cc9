#include "libbpf_log.h"

#include <stdarg.h>
#include <stdio.h>

#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include <bpf/libbpf.h>

namespace sigil {

namespace {

constexpr size_t kMaxKeptLines = 256;

struct ThreadLog {
	std::deque<std::string> lines;
	// Number of complete lines ever appended by this thread; the position LibbpfLogMark
	// returns.
	uint64_t total_lines = 0;
	// Text after the last newline, completed by the next message.
	std::string partial;
};

thread_local ThreadLog thread_log;

void AppendLine(ThreadLog &log, std::string line)
{
	log.lines.push_back(std::move(line));
	if (log.lines.size() > kMaxKeptLines)
		log.lines.pop_front();
	log.total_lines++;
}

// Debug messages are dropped: libbpf prints hundreds of them for each object.
int KeepLibbpfMessage(enum libbpf_print_level level, const char *format, va_list args)
{
	if (level == LIBBPF_DEBUG)
		return 0;

	va_list measure;
	va_copy(measure, args);
	int length = vsnprintf(nullptr, 0, format, measure);
	va_end(measure);
	if (length <= 0)
		return 0;

	std::vector<char> text(static_cast<size_t>(length) + 1);
	vsnprintf(text.data(), text.size(), format, args);

	ThreadLog &log = thread_log;
	log.partial.append(text.data(), static_cast<size_t>(length));
	size_t start = 0;
	for (size_t newline = log.partial.find('\n'); newline != std::string::npos;
	     newline = log.partial.find('\n', start)) {
		AppendLine(log, log.partial.substr(start, newline - start));
		start = newline + 1;
	}
	log.partial.erase(0, start);
	return length;
}

} // namespace

void InstallLibbpfLogger()
{
	static std::once_flag installed;
	std::call_once(installed, [] { libbpf_set_print(KeepLibbpfMessage); });
}

uint64_t LibbpfLogMark()
{
	ThreadLog &log = thread_log;
	// A partial line left from an earlier call belongs to that call's output.
	if (!log.partial.empty()) {
		AppendLine(log, log.partial);
		log.partial.clear();
	}
	return log.total_lines;
}

std::string LibbpfLogSince(uint64_t mark, size_t max_lines)
{
	ThreadLog &log = thread_log;
	if (!log.partial.empty()) {
		AppendLine(log, log.partial);
		log.partial.clear();
	}
	uint64_t available = log.total_lines > mark ? log.total_lines - mark : 0;
	if (available > log.lines.size())
		available = log.lines.size();
	if (available > max_lines)
		available = max_lines;

	std::string result;
	for (size_t i = log.lines.size() - available; i < log.lines.size(); i++) {
		if (!result.empty())
			result += '\n';
		result += log.lines[i];
	}
	return result;
}

} // namespace sigil
