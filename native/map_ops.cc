// Map operations on file descriptors. Keys and values are Uint8Arrays of the map's exact sizes.
// Each call first reads the map's sizes from the kernel, so that a buffer of the wrong size is an
// error instead of a kernel read or write past its end.
#include <errno.h>

#include <string>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include <napi.h>

#include "args.h"
#include "errors.h"
#include "functions.h"

namespace sigil {

namespace {

struct MapShape {
	// "map <name> (fd N)", or "map fd N" for a map without a name.
	std::string label;
	size_t key_bytes;
	size_t value_bytes;
	bool per_cpu;
	uint32_t value_size;
	int cpus;
};

bool IsPerCpuMap(uint32_t type)
{
	return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
	       type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

int PossibleCpus(Napi::Env env)
{
	int cpus = libbpf_num_possible_cpus();
	if (cpus < 0)
		ThrowErrno(env, "count possible CPUs", -cpus);
	return cpus;
}

MapShape DescribeMap(Napi::Env env, const std::string &operation, int fd)
{
	bpf_map_info info = {};
	uint32_t info_length = sizeof(info);
	if (bpf_obj_get_info_by_fd(fd, &info, &info_length) < 0)
		ThrowErrno(env, operation + " map fd " + std::to_string(fd), errno);

	MapShape shape;
	shape.label = info.name[0] != '\0'
			      ? std::string("map ") + info.name + " (fd " + std::to_string(fd) + ")"
			      : "map fd " + std::to_string(fd);
	shape.key_bytes = info.key_size;
	shape.value_size = info.value_size;
	shape.per_cpu = IsPerCpuMap(info.type);
	shape.cpus = 1;
	shape.value_bytes = info.value_size;
	if (shape.per_cpu) {
		// The kernel copies one value per possible CPU, each padded to 8 bytes.
		shape.cpus = PossibleCpus(env);
		shape.value_bytes = ((static_cast<size_t>(info.value_size) + 7) & ~size_t{7}) *
				    static_cast<size_t>(shape.cpus);
	}
	return shape;
}

void CheckKeySize(Napi::Env env, const std::string &action, const MapShape &shape, size_t size)
{
	if (size != shape.key_bytes)
		ThrowRangeError(env, action + ": key is " + std::to_string(size) +
					     " bytes but the map's keys are " +
					     std::to_string(shape.key_bytes) + " bytes");
}

void CheckValueSize(Napi::Env env, const std::string &action, const MapShape &shape, size_t size)
{
	if (size == shape.value_bytes)
		return;
	std::string expected = std::to_string(shape.value_bytes) + " bytes";
	if (shape.per_cpu)
		expected += " (" + std::to_string(shape.value_size) +
			    " bytes rounded up to 8, for each of " + std::to_string(shape.cpus) +
			    " possible CPUs)";
	ThrowRangeError(env, action + ": value is " + std::to_string(size) +
				     " bytes but the map's values are " + expected);
}

const void *KeyPointer(const ByteView &key)
{
	// Queue and stack maps have no key; the kernel expects a null pointer for them.
	return key.size == 0 ? nullptr : key.data;
}

Napi::Value MapUpdate(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = ArgFd(info, 0, "fd");
	ByteView key = ArgBytes(info, 1, "key");
	ByteView value = ArgBytes(info, 2, "value");
	uint64_t flags = static_cast<uint64_t>(ArgInteger(info, 3, "flags", 0, UINT32_MAX));
	MapShape shape = DescribeMap(env, "update", fd);
	std::string action = "update " + shape.label;
	CheckKeySize(env, action, shape, key.size);
	CheckValueSize(env, action, shape, value.size);
	if (bpf_map_update_elem(fd, KeyPointer(key), value.data, flags) < 0)
		ThrowErrno(env, action, errno);
	return env.Undefined();
}

// Checks that bytes contains a whole number of items of item_bytes each, and returns that number.
size_t CountItems(Napi::Env env, const std::string &action, const char *what, size_t bytes,
		  size_t item_bytes)
{
	if (item_bytes == 0 || bytes % item_bytes != 0)
		ThrowRangeError(env, action + ": " + what + " are " + std::to_string(bytes) +
					     " bytes, not a multiple of the map's " +
					     std::to_string(item_bytes) + "-byte " + what);
	return bytes / item_bytes;
}

// ENOTSUPP (524) is the kernel's internal "operation not supported" code, which some map types
// return for batch operations.
bool BatchUnsupported(int err)
{
	return err == EINVAL || err == EOPNOTSUPP || err == 524;
}

Napi::Value MapUpdateMany(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = ArgFd(info, 0, "fd");
	ByteView keys = ArgBytes(info, 1, "keys");
	ByteView values = ArgBytes(info, 2, "values");
	uint64_t flags = static_cast<uint64_t>(ArgInteger(info, 3, "flags", 0, UINT32_MAX));
	MapShape shape = DescribeMap(env, "update", fd);
	std::string action = "update " + shape.label;
	size_t count = CountItems(env, action, "keys", keys.size, shape.key_bytes);
	if (CountItems(env, action, "values", values.size, shape.value_bytes) != count)
		ThrowRangeError(env, action + ": " + std::to_string(count) + " keys but " +
					     std::to_string(values.size / shape.value_bytes) +
					     " values");
	if (count == 0)
		return env.Undefined();

	// One BPF_MAP_UPDATE_BATCH call where the map type has it, one call per entry otherwise.
	// Batch updates take no BPF_NOEXIST or BPF_EXIST, so calls with flags update one by one.
	if (flags == 0 && count <= UINT32_MAX) {
		uint32_t batch_count = static_cast<uint32_t>(count);
		bpf_map_batch_opts batch_options = {};
		batch_options.sz = sizeof(batch_options);
		if (bpf_map_update_batch(fd, keys.data, values.data, &batch_count, &batch_options) == 0)
			return env.Undefined();
		int err = errno;
		// A map type without batch operations fails before it writes anything, and the
		// kernel then leaves the count as it was.
		bool nothing_written = batch_count == 0 || batch_count == count;
		if (!BatchUnsupported(err) || !nothing_written)
			ThrowErrno(env, action + " (batch entry " + std::to_string(batch_count) + ")",
				   err);
	}
	for (size_t done = 0; done < count; done++) {
		if (bpf_map_update_elem(fd, keys.data + done * shape.key_bytes,
					values.data + done * shape.value_bytes, flags) < 0)
			ThrowErrno(env, action + " (entry " + std::to_string(done) + ")", errno);
	}
	return env.Undefined();
}

Napi::Value MapDeleteMany(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = ArgFd(info, 0, "fd");
	ByteView keys = ArgBytes(info, 1, "keys");
	MapShape shape = DescribeMap(env, "delete from", fd);
	std::string action = "delete from " + shape.label;
	size_t count = CountItems(env, action, "keys", keys.size, shape.key_bytes);
	size_t deleted = 0;
	for (size_t i = 0; i < count; i++) {
		if (bpf_map_delete_elem(fd, keys.data + i * shape.key_bytes) == 0) {
			deleted++;
			continue;
		}
		if (errno != ENOENT)
			ThrowErrno(env, action + " (entry " + std::to_string(i) + ")", errno);
	}
	return Napi::Number::New(env, static_cast<double>(deleted));
}

Napi::Value MapLookup(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = ArgFd(info, 0, "fd");
	ByteView key = ArgBytes(info, 1, "key");
	size_t value_size = static_cast<size_t>(ArgInteger(info, 2, "valueSize", 0, INT32_MAX));
	MapShape shape = DescribeMap(env, "look up in", fd);
	std::string action = "look up in " + shape.label;
	CheckKeySize(env, action, shape, key.size);
	CheckValueSize(env, action, shape, value_size);
	// The kernel writes straight into the new Buffer, so nothing is copied twice.
	Napi::Buffer<uint8_t> value = Napi::Buffer<uint8_t>::New(env, value_size);
	if (bpf_map_lookup_elem(fd, KeyPointer(key), value.Data()) < 0) {
		int err = errno;
		if (err == ENOENT)
			return env.Null();
		ThrowErrno(env, action, err);
	}
	return value;
}

Napi::Value MapDelete(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = ArgFd(info, 0, "fd");
	ByteView key = ArgBytes(info, 1, "key");
	MapShape shape = DescribeMap(env, "delete from", fd);
	std::string action = "delete from " + shape.label;
	CheckKeySize(env, action, shape, key.size);
	if (bpf_map_delete_elem(fd, KeyPointer(key)) < 0) {
		int err = errno;
		if (err == ENOENT)
			return Napi::Boolean::New(env, false);
		ThrowErrno(env, action, err);
	}
	return Napi::Boolean::New(env, true);
}

Napi::Value MapGetNextKey(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	int fd = ArgFd(info, 0, "fd");
	bool from_start = info[1].IsNull() || info[1].IsUndefined();
	ByteView key = from_start ? ByteView{nullptr, 0} : ArgBytes(info, 1, "key");
	size_t key_size = static_cast<size_t>(ArgInteger(info, 2, "keySize", 1, INT32_MAX));
	MapShape shape = DescribeMap(env, "get next key of", fd);
	std::string action = "get next key of " + shape.label;
	CheckKeySize(env, action, shape, key_size);
	if (!from_start)
		CheckKeySize(env, action, shape, key.size);
	Napi::Buffer<uint8_t> next = Napi::Buffer<uint8_t>::New(env, key_size);
	// A null key returns the first key.
	if (bpf_map_get_next_key(fd, from_start ? nullptr : key.data, next.Data()) < 0) {
		int err = errno;
		if (err == ENOENT)
			return env.Null();
		ThrowErrno(env, action, err);
	}
	return next;
}

Napi::Value MapCreate(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (!info[0].IsObject())
		ThrowTypeError(env, "options must be an object");
	Napi::Object options = info[0].As<Napi::Object>();
	Napi::Value name_value = options.Get("name");
	if (!name_value.IsString())
		ThrowTypeError(env, "options.name must be a string");
	std::string name = name_value.As<Napi::String>().Utf8Value();
	for (const char *required : {"type", "keySize", "valueSize", "maxEntries"}) {
		if (options.Get(required).IsUndefined())
			ThrowTypeError(env, std::string("options.") + required + " is required");
	}
	auto type = static_cast<bpf_map_type>(OptionInteger(options, "type", 1, INT32_MAX, 0));
	auto key_size = static_cast<uint32_t>(OptionInteger(options, "keySize", 0, UINT32_MAX, 0));
	auto value_size =
		static_cast<uint32_t>(OptionInteger(options, "valueSize", 0, UINT32_MAX, 0));
	auto max_entries =
		static_cast<uint32_t>(OptionInteger(options, "maxEntries", 0, UINT32_MAX, 0));
	auto flags = static_cast<uint32_t>(OptionInteger(options, "flags", 0, UINT32_MAX, 0));
	auto inner_map_fd =
		static_cast<uint32_t>(OptionInteger(options, "innerMapFd", 0, INT32_MAX, 0));

	bpf_map_create_opts create_options = {};
	create_options.sz = sizeof(create_options);
	create_options.map_flags = flags;
	create_options.inner_map_fd = inner_map_fd;
	int fd = bpf_map_create(type, name.empty() ? nullptr : name.c_str(), key_size, value_size,
				max_entries, &create_options);
	if (fd < 0)
		ThrowErrno(env, "create map " + (name.empty() ? std::string("(unnamed)") : name),
			   -fd);
	return Napi::Number::New(env, fd);
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo &info)
{
	return Napi::Number::New(info.Env(), PossibleCpus(info.Env()));
}

} // namespace

void InitMapOps(Napi::Env env, Napi::Object exports)
{
	exports.Set("mapUpdate", Napi::Function::New<MapUpdate>(env));
	exports.Set("mapUpdateMany", Napi::Function::New<MapUpdateMany>(env));
	exports.Set("mapDeleteMany", Napi::Function::New<MapDeleteMany>(env));
	exports.Set("mapLookup", Napi::Function::New<MapLookup>(env));
	exports.Set("mapDelete", Napi::Function::New<MapDelete>(env));
	exports.Set("mapGetNextKey", Napi::Function::New<MapGetNextKey>(env));
	exports.Set("mapCreate", Napi::Function::New<MapCreate>(env));
	exports.Set("numPossibleCpus", Napi::Function::New<NumPossibleCpus>(env));
}

} // namespace sigil
