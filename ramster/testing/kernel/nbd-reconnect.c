/* ramster's guest NBD client that survives its server's restart (static, libc only).
 *
 *   nbd-reconnect ADDRESS PORT EXPORT INDEX IO_TIMEOUT DEAD_CONN_TIMEOUT
 *
 * Connects /dev/nbdINDEX to EXPORT at ADDRESS:PORT (IPv4) through the kernel's generic netlink interface
 * (NBD_CMD_CONNECT) with NBD_ATTR_DEAD_CONN_TIMEOUT, which nbd-client 3.24 never sets: while
 * the device has no live connection, new requests wait up to DEAD_CONN_TIMEOUT seconds for one
 * instead of failing with EIO, and requests in flight on the dead socket are requeued after
 * IO_TIMEOUT seconds. It then stays resident: on the kernel's NBD_CMD_LINK_DEAD notice it
 * connects again (every 100 ms, for up to DEAD_CONN_TIMEOUT seconds) and hands the kernel the
 * new socket with NBD_CMD_RECONFIGURE. Prints "nbd-reconnect: ..." lines; exits 1 when it
 * gives up, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* include/uapi/linux/nbd-netlink.h */
enum { NBD_CMD_CONNECT = 1, NBD_CMD_RECONFIGURE = 3, NBD_CMD_LINK_DEAD = 4 };
enum {
    NBD_ATTR_INDEX = 1, NBD_ATTR_SIZE_BYTES, NBD_ATTR_BLOCK_SIZE_BYTES, NBD_ATTR_TIMEOUT,
    NBD_ATTR_SERVER_FLAGS, NBD_ATTR_CLIENT_FLAGS, NBD_ATTR_SOCKETS, NBD_ATTR_DEAD_CONN_TIMEOUT,
};
enum { NBD_SOCK_ITEM = 1 };
enum { NBD_SOCK_FD = 1 };

#define NBD_MAGIC 0x4e42444d41474943ULL /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454F5054ULL
#define NBD_OPT_EXPORT_NAME 1
#define NBD_FLAG_FIXED_NEWSTYLE 1
#define NBD_FLAG_NO_ZEROES 2

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int read_all(int fd, void *buf, size_t n) {
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t n) {
    for (size_t put = 0; put < n;) {
        ssize_t r = write(fd, (const char *)buf + put, n - put);
        if (r <= 0) return -1;
        put += (size_t)r;
    }
    return 0;
}

static uint64_t be64(uint64_t x) { return ((uint64_t)htonl((uint32_t)x) << 32) | htonl(x >> 32); }

/* A TCP connection that finished the fixed-newstyle handshake for `export`, or -1. */
static int nbd_open(const char *host, const char *port, const char *export, uint64_t *size,
                    uint16_t *flags) {
    /* An IPv4 address, not a name: a static binary has no resolver to speak of. */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    uint64_t magic, opt_magic;
    uint16_t hflags;
    if (read_all(fd, &magic, 8) || read_all(fd, &opt_magic, 8) || read_all(fd, &hflags, 2) ||
        be64(magic) != NBD_MAGIC || be64(opt_magic) != NBD_IHAVEOPT)
        goto fail;
    hflags = ntohs(hflags);
    uint32_t cflags = htonl(hflags & (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
    uint32_t name_len = (uint32_t)strlen(export);
    struct __attribute__((packed)) {
        uint64_t magic;
        uint32_t option, len;
    } opt = {be64(NBD_IHAVEOPT), htonl(NBD_OPT_EXPORT_NAME), htonl(name_len)};
    if (write_all(fd, &cflags, 4) || write_all(fd, &opt, sizeof opt) ||
        write_all(fd, export, name_len))
        goto fail;
    uint64_t sz;
    uint16_t tflags;
    char zeroes[124];
    if (read_all(fd, &sz, 8) || read_all(fd, &tflags, 2)) goto fail;
    if (!(hflags & NBD_FLAG_NO_ZEROES) && read_all(fd, zeroes, sizeof zeroes)) goto fail;
    *size = be64(sz);
    *flags = ntohs(tflags);
    return fd;
fail:
    close(fd);
    return -1;
}

/* A generic netlink message being built. */
struct msg {
    char buf[512];
    size_t len;
};

static void msg_start(struct msg *m, uint16_t family, uint8_t cmd) {
    memset(m, 0, sizeof *m);
    struct nlmsghdr *h = (struct nlmsghdr *)m->buf;
    h->nlmsg_type = family;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    struct genlmsghdr *g = (struct genlmsghdr *)NLMSG_DATA(h);
    g->cmd = cmd;
    g->version = 1;
    m->len = NLMSG_LENGTH(GENL_HDRLEN);
}

static struct nlattr *attr(struct msg *m, uint16_t type, const void *data, size_t n) {
    struct nlattr *a = (struct nlattr *)(m->buf + m->len);
    a->nla_type = type;
    a->nla_len = (uint16_t)(NLA_HDRLEN + n);
    if (n) memcpy((char *)a + NLA_HDRLEN, data, n);
    m->len += NLA_ALIGN(a->nla_len);
    return a;
}

static void attr_u32(struct msg *m, uint16_t type, uint32_t v) { attr(m, type, &v, 4); }
static void attr_u64(struct msg *m, uint16_t type, uint64_t v) { attr(m, type, &v, 8); }
static void nest_end(struct msg *m, struct nlattr *a) {
    a->nla_len = (uint16_t)(m->buf + m->len - (char *)a);
}

/* Send `m` and wait for its ack; 0 or -errno. The first data reply (one comes before the
 * ack, maybe in another datagram) is copied to `reply` when given. */
static int transact(int nl, struct msg *m, char *reply, size_t cap) {
    static char scratch[16384];
    int copied = 0;
    ((struct nlmsghdr *)m->buf)->nlmsg_len = (uint32_t)m->len;
    if (send(nl, m->buf, m->len, 0) < 0) return -errno;
    for (;;) {
        ssize_t n = recv(nl, scratch, sizeof scratch, 0);
        if (n < 0) return -errno;
        for (struct nlmsghdr *h = (struct nlmsghdr *)scratch; NLMSG_OK(h, n);
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_ERROR)
                return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
            if (reply && !copied && h->nlmsg_len <= cap) {
                memcpy(reply, h, h->nlmsg_len);
                copied = 1;
            }
        }
    }
}

/* The nbd family's id and its multicast group's id (CTRL_CMD_GETFAMILY). */
static int resolve(int nl, uint16_t *family, uint32_t *group) {
    struct msg m;
    msg_start(&m, GENL_ID_CTRL, CTRL_CMD_GETFAMILY);
    attr(&m, CTRL_ATTR_FAMILY_NAME, "nbd", 4);
    static char reply[8192];
    memset(reply, 0, sizeof reply);
    int err = transact(nl, &m, reply, sizeof reply);
    struct nlmsghdr *h = (struct nlmsghdr *)reply;
    if (err || h->nlmsg_len == 0) return err ? err : -ENOENT;
    char *p = (char *)NLMSG_DATA(h) + GENL_HDRLEN, *end = reply + h->nlmsg_len;
    *family = 0;
    *group = 0;
    for (struct nlattr *a; p + NLA_HDRLEN <= end; p += NLA_ALIGN(a->nla_len)) {
        a = (struct nlattr *)p;
        if (a->nla_len < NLA_HDRLEN) break;
        if (a->nla_type == CTRL_ATTR_FAMILY_ID) *family = *(uint16_t *)((char *)a + NLA_HDRLEN);
        if (a->nla_type != CTRL_ATTR_MCAST_GROUPS) continue;
        char *q = (char *)a + NLA_HDRLEN, *qend = (char *)a + a->nla_len;
        for (struct nlattr *g; q + NLA_HDRLEN <= qend; q += NLA_ALIGN(g->nla_len)) {
            g = (struct nlattr *)q; /* one group: its name and id */
            if (g->nla_len < NLA_HDRLEN) break;
            char *r = q + NLA_HDRLEN, *rend = q + g->nla_len;
            for (struct nlattr *f; r + NLA_HDRLEN <= rend; r += NLA_ALIGN(f->nla_len)) {
                f = (struct nlattr *)r;
                if (f->nla_len < NLA_HDRLEN) break;
                if (f->nla_type == CTRL_ATTR_MCAST_GRP_ID)
                    *group = *(uint32_t *)(r + NLA_HDRLEN);
            }
        }
    }
    return *family ? 0 : -ENOENT;
}

static int nl_socket(void) {
    int nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_GENERIC);
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (nl < 0 || bind(nl, (struct sockaddr *)&sa, sizeof sa) != 0) return -1;
    return nl;
}

/* NBD_CMD_CONNECT (first) or NBD_CMD_RECONFIGURE with one socket; 0 or -errno. */
static int configure(int nl, uint16_t family, uint8_t cmd, uint32_t index, int fd, uint64_t size,
                     uint16_t flags, uint64_t io_timeout, uint64_t dead_timeout) {
    struct msg m;
    msg_start(&m, family, cmd);
    attr_u32(&m, NBD_ATTR_INDEX, index);
    if (cmd == NBD_CMD_CONNECT) {
        attr_u64(&m, NBD_ATTR_SIZE_BYTES, size);
        attr_u64(&m, NBD_ATTR_BLOCK_SIZE_BYTES, 4096);
        attr_u64(&m, NBD_ATTR_SERVER_FLAGS, flags);
    }
    attr_u64(&m, NBD_ATTR_TIMEOUT, io_timeout);
    attr_u64(&m, NBD_ATTR_DEAD_CONN_TIMEOUT, dead_timeout);
    struct nlattr *socks = attr(&m, NBD_ATTR_SOCKETS, NULL, 0);
    struct nlattr *item = attr(&m, NBD_SOCK_ITEM, NULL, 0);
    attr_u32(&m, NBD_SOCK_FD, (uint32_t)fd);
    nest_end(&m, item);
    nest_end(&m, socks);
    return transact(nl, &m, NULL, 0);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s ADDRESS PORT EXPORT INDEX IO_TIMEOUT DEAD_CONN_TIMEOUT\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2], *export = argv[3];
    uint32_t index = (uint32_t)atoi(argv[4]);
    uint64_t io_timeout = strtoull(argv[5], NULL, 10), dead = strtoull(argv[6], NULL, 10);
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* The device may be this guest's swap: nothing here may have to be swapped back in. */
    if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) perror("nbd-reconnect: mlockall");
    FILE *oom = fopen("/proc/self/oom_score_adj", "w");
    if (oom) {
        fputs("-1000", oom);
        fclose(oom);
    }
    int nl = nl_socket(), events = nl_socket();
    uint16_t family;
    uint32_t group;
    int err = nl < 0 || events < 0 ? -errno : resolve(nl, &family, &group);
    if (err) {
        fprintf(stderr, "nbd-reconnect: no nbd netlink family (%s)\n", strerror(-err));
        return 1;
    }
    /* Listen before connecting: a link that dies at once is not missed. */
    if (!group || setsockopt(events, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group)) {
        fprintf(stderr, "nbd-reconnect: cannot join nbd's multicast group\n");
        return 1;
    }
    uint64_t size;
    uint16_t flags;
    int fd = nbd_open(host, port, export, &size, &flags);
    if (fd < 0) {
        fprintf(stderr, "nbd-reconnect: cannot connect to %s:%s export %s\n", host, port, export);
        return 1;
    }
    err = configure(nl, family, NBD_CMD_CONNECT, index, fd, size, flags, io_timeout, dead);
    if (err) {
        fprintf(stderr, "nbd-reconnect: NBD_CMD_CONNECT failed: %s\n", strerror(-err));
        return 1;
    }
    close(fd); /* the kernel holds its own reference */
    printf("nbd-reconnect: connected /dev/nbd%u size=%llu flags=0x%x timeout=%llu dead=%llu\n",
           index, (unsigned long long)size, flags, (unsigned long long)io_timeout,
           (unsigned long long)dead);
    static char buf[8192];
    for (unsigned reconnects = 0;;) {
        ssize_t n = recv(events, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR || errno == ENOBUFS) continue;
            perror("nbd-reconnect: recv");
            return 1;
        }
        int dead_link = 0;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
            struct genlmsghdr *g = (struct genlmsghdr *)NLMSG_DATA(h);
            if (h->nlmsg_type != family || g->cmd != NBD_CMD_LINK_DEAD) continue;
            /* Its NBD_ATTR_INDEX says which device: another one's link is not ours. */
            char *p = (char *)g + GENL_HDRLEN, *end = (char *)h + h->nlmsg_len;
            for (struct nlattr *a; p + NLA_HDRLEN <= end; p += NLA_ALIGN(a->nla_len)) {
                a = (struct nlattr *)p;
                if (a->nla_len < NLA_HDRLEN) break;
                if (a->nla_type == NBD_ATTR_INDEX && *(uint32_t *)(p + NLA_HDRLEN) == index)
                    dead_link = 1;
            }
        }
        if (!dead_link) continue;
        double t0 = now();
        printf("nbd-reconnect: link dead, reconnecting\n");
        unsigned attempts = 0;
        for (;;) {
            attempts++;
            uint64_t new_size;
            uint16_t new_flags;
            fd = nbd_open(host, port, export, &new_size, &new_flags);
            if (fd >= 0 && new_size != size) {
                fprintf(stderr, "nbd-reconnect: the export's size changed; giving up\n");
                return 1;
            }
            if (fd >= 0) {
                err = configure(nl, family, NBD_CMD_RECONFIGURE, index, fd, 0, 0, io_timeout,
                                dead);
                close(fd);
                if (!err) break;
                fprintf(stderr, "nbd-reconnect: NBD_CMD_RECONFIGURE: %s\n", strerror(-err));
            }
            if (now() - t0 > (double)dead) {
                fprintf(stderr, "nbd-reconnect: no server within %llu s; giving up\n",
                        (unsigned long long)dead);
                return 1;
            }
            usleep(100 * 1000);
        }
        printf("nbd-reconnect: reconnected in %.2f s after %u attempts (reconnect %u)\n",
               now() - t0, attempts, ++reconnects);
    }
}
