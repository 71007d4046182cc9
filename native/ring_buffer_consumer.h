// RingBufferConsumer: a thread that reads records from a BPF ring buffer map and hands them to a
// JavaScript callback in batches.
//
// Batch format: each record is framed as a little-endian u32 length, a u32 zero, the record
// bytes, and zero padding to the next multiple of 8. A batch is a Buffer of whole frames.
//
// Backpressure: batches go through a thread-safe function with a bounded queue, called in
// blocking mode. When JavaScript falls behind, the thread waits, stops reading, the ring buffer
// fills, and the BPF programs see failed reserves, which they count. The consumer itself drops
// records only when stop() discards batches that JavaScript has not received yet; stats() counts
// them as discardedRecords.
//
// Release mode (maxUnreleasedBatches > 0): the thread hands over at most that many batches that
// JavaScript has not released with release(). Node's thread-safe function runs up to 1000 queued
// calls in one event-loop turn, so JavaScript would handle a queue of batches back to back while
// sockets and files wait. Releasing from setImmediate lets I/O run between two batches.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <napi.h>

#include "addon_state.h"

struct ring_buffer;

namespace sigil {

struct ConsumerCounters {
	std::atomic<uint64_t> records{0};
	std::atomic<uint64_t> batches{0};
	std::atomic<uint64_t> bytes{0};
	std::atomic<uint64_t> discarded_records{0};
};

// One item of the thread-safe function's queue: framed records, or a failure of the thread.
struct ConsumerBatch {
	std::vector<uint8_t> bytes;
	uint32_t record_count = 0;
	std::shared_ptr<ConsumerCounters> counters;
	int error = 0;
	std::string error_operation;
};

// Context of the thread-safe function, deleted by its finalizer on the JavaScript thread.
struct DeliveryContext {
	Napi::FunctionReference on_error;
};

void DeliverBatch(Napi::Env env, Napi::Function on_batch, DeliveryContext *context,
		  ConsumerBatch *batch);

using DeliveryFunction =
	Napi::TypedThreadSafeFunction<DeliveryContext, ConsumerBatch, DeliverBatch>;

class RingBufferConsumer : public Napi::ObjectWrap<RingBufferConsumer>, public Resource {
public:
	static void Init(Napi::Env env, Napi::Object exports);

	explicit RingBufferConsumer(const Napi::CallbackInfo &info);
	~RingBufferConsumer() override;

	Kind ResourceKind() const override { return Kind::kConsumer; }
	void ReleaseResource() noexcept override;

private:
	enum class State {
		kCreated,
		kRunning,
		kStopped
	};

	void Start(const Napi::CallbackInfo &info);
	void Stop(const Napi::CallbackInfo &info);
	void Release(const Napi::CallbackInfo &info);
	Napi::Value Stats(const Napi::CallbackInfo &info);
	Napi::Value GetRunning(const Napi::CallbackInfo &info);

	// Worker thread.
	void Run();
	static int OnRecord(void *context, void *data, size_t size);
	int AppendRecord(const void *data, size_t size);
	bool FlushBatch();
	bool WaitForRelease();
	void ReportFailure(const std::string &operation, int err);

	// Stops and joins the thread if it runs, then frees the ring buffer and the eventfd.
	void Shutdown() noexcept;

	int map_fd_;
	size_t max_batch_bytes_;
	int poll_timeout_ms_;
	size_t max_queued_batches_;
	// 0: release mode off.
	size_t max_unreleased_batches_;

	State state_ = State::kCreated;
	ring_buffer *ring_ = nullptr;
	// Written by Shutdown to wake the thread from poll(2) at once.
	int wake_fd_ = -1;
	std::atomic<bool> stop_requested_{false};
	// Batches handed over and not released yet, in release mode.
	std::mutex release_mutex_;
	std::condition_variable release_cv_;
	size_t unreleased_batches_ = 0;
	std::thread thread_;
	DeliveryFunction delivery_;
	Napi::FunctionReference on_batch_;
	Napi::FunctionReference on_error_;

	// Batch being filled; touched only by the worker thread while it runs.
	std::unique_ptr<ConsumerBatch> pending_;
	std::shared_ptr<ConsumerCounters> counters_ = std::make_shared<ConsumerCounters>();
	std::shared_ptr<ResourceRegistry> registry_;
};

} // namespace sigil
