/* A reference open-loop HTTP/1.1 generator in C, for benchmarks/loadgen_capacity.py only.

   It follows the same rules as modelfleet's generator (src/modelfleet/bench/loadgen.py and
   transport.py), so the two can be compared on the same machine and server: one keep-alive request in
   flight per connection, at most CONNS connections (opened before the clock starts), a timer with
   1 ms resolution that sends everything due within 0.5 ms, each response also sending what is overdue
   by 0.25 ms or more, a send more than 2 ms after its intended time counted late, a send that finds
   every connection busy queued and counted capped, the first 0.5 s not measured. What it holds is
   what any open-loop generator with these rules can hold here, with no interpreter in the way.

   Usage: openloop_reference PORT PATH RATE_PER_S DURATION_S CONNS
   Prints one JSON object. Exit codes: 0 done, 1 bad arguments, 2 connection or protocol failure. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define BUCKETS 100001 /* latency in 10 us buckets, the last one holds everything from 1 s up */
#define WARMUP_S 0.5
#define EARLY_S 0.0005
#define CATCH_UP_S 0.00025
#define LATE_S 0.002

static int fds[MAX_CONNS];
static double intended_of[MAX_CONNS];
static long received[MAX_CONNS];
static int idle[MAX_CONNS], idle_count;
static double *queue;
static long queue_head, queue_tail;
static char request[512];
static int request_len, response_len;
static long scheduled, late, capped, ok, in_flight;
static long histogram[BUCKETS];
static double measure_start, end_at, step_s, next_due;
static int stopping;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void put_on_wire(int c, double intended) {
  intended_of[c] = intended;
  if (write(fds[c], request, (size_t)request_len) != request_len) {
    perror("write");
    exit(2);
  }
}

static void dispatch(double intended, double now) {
  if (intended >= measure_start) {
    scheduled++;
    if (now - intended > LATE_S) late++;
  }
  in_flight++;
  if (idle_count > 0 && queue_head == queue_tail) {
    put_on_wire(idle[--idle_count], intended);
  } else {
    queue[queue_tail++] = intended;
    if (intended >= measure_start) capped++;
  }
}

static void send_due(double now) {
  while (!stopping && next_due <= now + EARLY_S) {
    if (next_due >= end_at) {
      stopping = 1;
      return;
    }
    dispatch(next_due, now);
    next_due += step_s;
    now = now_s();
  }
}

static double cpu_s(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s PORT PATH RATE_PER_S DURATION_S CONNS\n", argv[0]);
    return 1;
  }
  int port = atoi(argv[1]), conns = atoi(argv[5]);
  double rate = atof(argv[3]), duration_s = atof(argv[4]);
  if (port <= 0 || rate <= 0 || duration_s <= 0 || conns <= 0 || conns > MAX_CONNS) {
    fprintf(stderr, "bad arguments\n");
    return 1;
  }
  request_len = snprintf(request, sizeof request,
                         "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: openloop-reference\r\n"
                         "Accept: */*\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                         argv[2], port);
  /* The no-op reference server's answer; its fixed length is how responses are counted. */
  response_len = (int)strlen(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
      "Connection: keep-alive\r\n\r\n{}");
  queue = malloc(sizeof(double) * (size_t)(rate * (duration_s + WARMUP_S + 1.0) + 1024));
  int poller = epoll_create1(0);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  for (int c = 0; c < conns; c++) {
    int one = 1;
    fds[c] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fds[c], (struct sockaddr *)&address, sizeof address) != 0) {
      perror("connect");
      return 2;
    }
    setsockopt(fds[c], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event event = {.events = EPOLLIN, .data.u32 = (uint32_t)c};
    epoll_ctl(poller, EPOLL_CTL_ADD, fds[c], &event);
    idle[idle_count++] = c;
  }
  double start = now_s();
  measure_start = start + WARMUP_S;
  end_at = measure_start + duration_s;
  step_s = 1.0 / rate;
  next_due = start + step_s;
  double cpu_start = 0.0;
  int cpu_started = 0;
  struct epoll_event events[1024];
  static char buffer[65536];
  while (!stopping || in_flight > 0) {
    double now = now_s();
    if (!cpu_started && now >= measure_start) {
      cpu_start = cpu_s();
      cpu_started = 1;
    }
    send_due(now);
    double wait_s = next_due - now_s();
    int timeout_ms = stopping ? 1 : (wait_s > 0.001 ? (int)(wait_s * 1000.0) : 1);
    int ready = epoll_wait(poller, events, 1024, timeout_ms);
    for (int i = 0; i < ready; i++) {
      int c = (int)events[i].data.u32;
      ssize_t got = read(fds[c], buffer, sizeof buffer);
      if (got <= 0) {
        fprintf(stderr, "connection %d closed or failed\n", c);
        return 2;
      }
      received[c] += got;
      while (received[c] >= response_len) {
        received[c] -= response_len;
        double finished = now_s(), intended = intended_of[c];
        in_flight--;
        if (intended >= measure_start) {
          long bucket = (long)((finished - intended) * 1e5);
          histogram[bucket < 0 ? 0 : (bucket >= BUCKETS ? BUCKETS - 1 : bucket)]++;
          ok++;
        }
        if (queue_head < queue_tail) put_on_wire(c, queue[queue_head++]);
        else idle[idle_count++] = c;
        if (next_due <= finished - CATCH_UP_S) send_due(finished);
      }
    }
  }
  double cpu_used_s = cpu_s() - cpu_start, measured_s = now_s() - measure_start;
  long seen = 0, p99_bucket = 0;
  for (long b = 0; b < BUCKETS; b++) {
    seen += histogram[b];
    if (seen * 100 >= ok * 99) {
      p99_bucket = b;
      break;
    }
  }
  printf("{\"scheduled\": %ld, \"late\": %ld, \"capped\": %ld, \"ok\": %ld, \"throughput_per_s\": %.1f, "
         "\"cpu_percent\": %.1f, \"p99_ms\": %.3f}\n",
         scheduled, late, capped, ok, (double)ok / duration_s, 100.0 * cpu_used_s / measured_s,
         (double)(p99_bucket + 1) / 100.0);
  return 0;
}
