// Positions of a BPF ring buffer, read from its mmapped control pages, for the fill gauge.
// libbpf 1.1 has no ring__avail_data_size (added in libbpf 1.3), so the addon maps the consumer
// and producer pages itself, read-only, for the duration of one call.
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <napi.h>

#include "args.h"
#include "errors.h"
#include "functions.h"

namespace sigil {

namespace {

// ringBufferPositions(mapFd) -> { consumerPosition: bigint, producerPosition: bigint, size }.
// The positions count bytes since the map was created; producer minus consumer is the data
// written (or reserved) and not yet consumed.
Napi::Value RingBufferPositions(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = ArgFd(info, 0, "mapFd");
	std::string action = "read ring buffer positions of map fd " + std::to_string(fd);

	bpf_map_info map_info = {};
	uint32_t info_length = sizeof(map_info);
	if (bpf_obj_get_info_by_fd(fd, &map_info, &info_length) < 0)
		ThrowErrno(env, action, errno);
	if (map_info.type != BPF_MAP_TYPE_RINGBUF)
		ThrowErrno(env, action, EINVAL,
			   "map " + std::string(map_info.name) + " is not a ring buffer (type " +
				   std::to_string(map_info.type) + ")");

	// Page 0 contains the consumer position, page 1 the producer position. The kernel allows a
	// read-only mapping of both, and only the consumer page may be mapped writable.
	long page_size = sysconf(_SC_PAGESIZE);
	size_t length = 2 * static_cast<size_t>(page_size);
	void *pages = mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0);
	if (pages == MAP_FAILED)
		ThrowErrno(env, action + ": mmap", errno);
	auto *bytes = static_cast<const uint8_t *>(pages);
	// The kernel and the consumer publish the positions with release stores.
	uint64_t consumer = __atomic_load_n(reinterpret_cast<const unsigned long *>(bytes),
					    __ATOMIC_ACQUIRE);
	uint64_t producer = __atomic_load_n(
		reinterpret_cast<const unsigned long *>(bytes + page_size), __ATOMIC_ACQUIRE);
	munmap(pages, length);

	Napi::Object result = Napi::Object::New(env);
	result.Set("consumerPosition", Napi::BigInt::New(env, consumer));
	result.Set("producerPosition", Napi::BigInt::New(env, producer));
	result.Set("size", Napi::Number::New(env, map_info.max_entries));
	return result;
}

} // namespace

void InitRingBufferFill(Napi::Env env, Napi::Object exports)
{
	exports.Set("ringBufferPositions", Napi::Function::New<RingBufferPositions>(env));
}

} // namespace sigil
