// Copyright 2026 The kvmkit Authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//
// The disk and network benchmark that runs inside the L2 guest (netdisk-bench.sh),
// the same binary under every VMM, and its peer in L1. Static, so that it needs
// nothing from either root:
//
//   cc -O2 -static -pthread -o guest-bench guest-bench.c
//
//   guest-bench disk DEVICE SECONDS     # in L2: O_DIRECT sequential 1 MiB reads and
//                                       # writes, 4 KiB random reads at QD 1 and 32
//   guest-bench net HOST PORT SECONDS   # in L2: TCP L2->L1 and L1->L2, and 1-byte
//                                       # request/response round trips over TCP
//   guest-bench server PORT             # in L1: the peer of `net`
//   guest-bench mktap NAME              # in L1: a persistent tap for every VMM
//
// Each measurement prints one "NETDISK name=value" line. A step that fails prints
// "NETDISK-FAILED what: error" and the rest go on.

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)
#define BLOCK 4096
#define QUEUE_DEPTH 32

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void failed(const char *what) {
    printf("NETDISK-FAILED %s: %s\n", what, strerror(errno));
    fflush(stdout);
}

static void *aligned(size_t len) {
    void *buffer = NULL;
    if (posix_memalign(&buffer, BLOCK, len) != 0)
        return NULL;
    memset(buffer, 0x5a, len);
    return buffer;
}

/* Sequential 1 MiB transfers for at most `seconds` or the whole device: MB/s. */
static void sequential(const char *device, int write, double seconds, off_t size) {
    const char *name = write ? "seq_write_mbs" : "seq_read_mbs";
    int fd = open(device, (write ? O_WRONLY : O_RDONLY) | O_DIRECT);
    char *buffer = aligned(MIB);
    if (fd < 0 || !buffer) {
        failed(name);
        return;
    }
    double start = now(), end = start + seconds;
    off_t done = 0;
    while (now() < end && done + MIB <= size) {
        ssize_t n = write ? pwrite(fd, buffer, MIB, done) : pread(fd, buffer, MIB, done);
        if (n != MIB) {
            failed(name);
            break;
        }
        done += MIB;
    }
    if (write && fdatasync(fd) != 0)
        failed("fdatasync");
    double elapsed = now() - start;
    printf("NETDISK %s=%.1f\n", name, done / 1e6 / elapsed);
    fflush(stdout);
    close(fd);
    free(buffer);
}

struct random_reads {
    int fd;
    off_t blocks;
    double end;
    unsigned seed;
    long done;
    int error;
};

static void *random_reader(void *arg) {
    struct random_reads *job = arg;
    char *buffer = aligned(BLOCK);
    if (!buffer) {
        job->error = ENOMEM;
        return NULL;
    }
    while (now() < job->end) {
        off_t block = rand_r(&job->seed) % job->blocks;
        if (pread(job->fd, buffer, BLOCK, block * BLOCK) != BLOCK) {
            job->error = errno ? errno : EIO;
            break;
        }
        job->done++;
    }
    free(buffer);
    return NULL;
}

/* 4 KiB random reads from `depth` threads (the queue depth) for `seconds`: IOPS. */
static void random_read(const char *device, int depth, double seconds, off_t size) {
    char name[32];
    snprintf(name, sizeof(name), "randread_qd%d_iops", depth);
    int fd = open(device, O_RDONLY | O_DIRECT);
    if (fd < 0) {
        failed(name);
        return;
    }
    struct random_reads jobs[QUEUE_DEPTH];
    pthread_t threads[QUEUE_DEPTH];
    double start = now();
    for (int i = 0; i < depth; i++) {
        jobs[i] = (struct random_reads){fd, size / BLOCK, start + seconds, 7919u * (i + 1), 0, 0};
        pthread_create(&threads[i], NULL, random_reader, &jobs[i]);
    }
    long done = 0;
    for (int i = 0; i < depth; i++) {
        pthread_join(threads[i], NULL);
        done += jobs[i].done;
        if (jobs[i].error) {
            errno = jobs[i].error;
            failed(name);
        }
    }
    printf("NETDISK %s=%.0f\n", name, done / (now() - start));
    fflush(stdout);
    close(fd);
}

static int disk(const char *device, double seconds) {
    int fd = open(device, O_RDONLY);
    off_t size = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
    if (size <= 0) {
        failed(device);
        return 1;
    }
    close(fd);
    sequential(device, 0, seconds, size);
    sequential(device, 1, seconds, size);
    random_read(device, 1, seconds, size);
    random_read(device, QUEUE_DEPTH, seconds, size);
    return 0;
}

static int connect_to(const char *host, int port, char command) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (write(fd, &command, 1) != 1) {
        close(fd);
        return -1;
    }
    return fd;
}

static const char *retransmits(void) {
    static char line[64];
    /* The TCP RetransSegs counter, so that a slow stream shows whether it lost. */
    FILE *snmp = fopen("/proc/net/snmp", "r");
    char row[1024], names[1024] = "";
    snprintf(line, sizeof(line), "?");
    while (snmp && fgets(row, sizeof(row), snmp)) {
        if (strncmp(row, "Tcp:", 4) != 0)
            continue;
        if (!names[0]) {
            strcpy(names, row);
            continue;
        }
        int column = 0, wanted = -1;
        for (char *name = strtok(names, " \n"); name; name = strtok(NULL, " \n"), column++)
            if (strcmp(name, "RetransSegs") == 0)
                wanted = column;
        column = 0;
        for (char *value = strtok(row, " \n"); value; value = strtok(NULL, " \n"), column++)
            if (column == wanted)
                snprintf(line, sizeof(line), "%s", value);
        break;
    }
    if (snmp)
        fclose(snmp);
    return line;
}

/* L2 -> L1: send for `seconds`, then the peer says how much it got. */
static void tcp_send(const char *host, int port, double seconds) {
    int fd = connect_to(host, port, 'S');
    static char buffer[256 * 1024];
    if (fd < 0) {
        failed("tcp_tx_mbits");
        return;
    }
    double start = now(), end = start + seconds;
    while (now() < end) {
        if (write(fd, buffer, sizeof(buffer)) < 0) {
            failed("tcp_tx_mbits");
            close(fd);
            return;
        }
    }
    shutdown(fd, SHUT_WR);
    uint64_t received = 0;
    if (read(fd, &received, sizeof(received)) != sizeof(received)) {
        failed("tcp_tx_mbits (the peer's count)");
        close(fd);
        return;
    }
    printf("NETDISK tcp_tx_mbits=%.1f retrans_segs=%s\n",
           received * 8 / 1e6 / (now() - start), retransmits());
    fflush(stdout);
    close(fd);
}

/* L1 -> L2: the peer sends for `seconds` and closes. */
static void tcp_receive(const char *host, int port, double seconds) {
    int fd = connect_to(host, port, 'G');
    static char buffer[256 * 1024];
    if (fd < 0) {
        failed("tcp_rx_mbits");
        return;
    }
    unsigned char duration = seconds;
    if (write(fd, &duration, 1) != 1) {
        failed("tcp_rx_mbits");
        close(fd);
        return;
    }
    double start = now();
    uint64_t received = 0;
    ssize_t n;
    while ((n = read(fd, buffer, sizeof(buffer))) > 0)
        received += n;
    printf("NETDISK tcp_rx_mbits=%.1f\n", received * 8 / 1e6 / (now() - start));
    fflush(stdout);
    close(fd);
}

/* One byte there and back, again and again, for `seconds`: round trips per second. */
static void round_trips(const char *host, int port, double seconds) {
    int fd = connect_to(host, port, 'E');
    if (fd < 0) {
        failed("tcp_rr_per_s");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    double start = now(), end = start + seconds;
    long count = 0;
    char byte = 'x';
    while (now() < end) {
        if (write(fd, &byte, 1) != 1 || read(fd, &byte, 1) != 1) {
            failed("tcp_rr_per_s");
            break;
        }
        count++;
    }
    printf("NETDISK tcp_rr_per_s=%.0f\n", count / (now() - start));
    fflush(stdout);
    close(fd);
}

static int net(const char *host, int port, double seconds) {
    tcp_send(host, port, seconds);
    tcp_receive(host, port, seconds);
    round_trips(host, port, seconds);
    return 0;
}

static void serve(int fd) {
    static char buffer[256 * 1024];
    char command;
    if (read(fd, &command, 1) != 1)
        return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (command == 'S') {
        uint64_t received = 0;
        ssize_t n;
        while ((n = read(fd, buffer, sizeof(buffer))) > 0)
            received += n;
        if (write(fd, &received, sizeof(received)) < 0)
            perror("guest-bench server: reply");
    } else if (command == 'G') {
        unsigned char seconds = 0;
        if (read(fd, &seconds, 1) != 1)
            return;
        double end = now() + seconds;
        while (now() < end && write(fd, buffer, sizeof(buffer)) > 0) {
        }
    } else if (command == 'E') {
        char byte;
        while (read(fd, &byte, 1) == 1 && write(fd, &byte, 1) == 1) {
        }
    }
}

static int server(int port) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(fd, 4) != 0) {
        perror("guest-bench server");
        return 1;
    }
    for (;;) {
        int client = accept(fd, NULL, NULL);
        if (client < 0)
            continue;
        serve(client);
        close(client);
    }
}

static int make_tap(const char *name) {
    struct ifreq request = {.ifr_flags = IFF_TAP | IFF_NO_PI};
    int fd = open("/dev/net/tun", O_RDWR);
    snprintf(request.ifr_name, IFNAMSIZ, "%s", name);
    if (fd < 0 || ioctl(fd, TUNSETIFF, &request) != 0 || ioctl(fd, TUNSETPERSIST, 1) != 0) {
        perror("guest-bench mktap");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "disk") == 0)
        return disk(argv[2], atof(argv[3]));
    if (argc == 5 && strcmp(argv[1], "net") == 0)
        return net(argv[2], atoi(argv[3]), atof(argv[4]));
    if (argc == 3 && strcmp(argv[1], "server") == 0)
        return server(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "mktap") == 0)
        return make_tap(argv[2]);
    fprintf(stderr, "usage: guest-bench disk DEVICE SECONDS | net HOST PORT SECONDS |"
                    " server PORT | mktap NAME\n");
    return 2;
}
