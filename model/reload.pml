/*
 * The reload protocol of manager/ngx_http_lua_ffi_reload.c, as a Promela
 * model for spin: two worker slots, an admin reload and a file drop that
 * race for the turn, lazy loads at any time (before, during, after a
 * reload), a deadline that may pass at any wait or a coordinator that dies
 * at any step or a transient failure while judging a drop (one fault per
 * run: the state space stays small enough for make test), a worker that
 * crashes and is respawned (a HUP replaces a slot's occupant the same
 * way); the admin's reload may be a canary instead, and a third
 * operation promotes or retires whatever canary runs by then (409 if
 * none). Checked exhaustively (make test):
 *   - after a 200, no live worker serves the old version (assert); after
 *     a canary's 200, every live runtime has its canary twin; after a
 *     promotion's or a retirement's 200, none has (assert);
 *   - one canary at a time: no reload or canary starts while one runs;
 *   - no two reloads interleave (assert);
 *   - a drop is judged at most once by a reload that ended (assert): it
 *     is judged again only when the coordinator that recorded it died
 *     before its reload ended; and every reload and drop ends: no invalid
 *     end state, and at the end every live worker serves the current
 *     version (and its canary twin on the canary, if one runs) and a
 *     drop some live worker watches was judged by a reload that ended
 *     (not only recorded by a coordinator that died).
 */

#define N       2            /* worker slots */
#define RT      1            /* runtimes a worker may have (a load) */
#define MAXV    2            /* versions: 1, then one reload */

mtype = { NONE, PREPARE, COMMIT, ABORT };
mtype = { RELOAD, CANARY, END };     /* what a coordinator does */

/* the shared zone */
byte   seq;
mtype  cmd = NONE;
byte   cmd_ver;
byte   owner;                /* coordinator id, 0: none */
bool   owner_alive;
byte   current = 1;
byte   canary;               /* the canary's version, 0: none runs */
byte   top = 1;              /* the highest version given: never again */
byte   acked[N];
bool   rc_ok[N];
bool   alive[N];
bool   watches[N];           /* the slot's occupant watches the file */
bool   file_new;             /* a drop waits to be judged */
bool   judged_new;           /* drop_ident: the new file was recorded */
bool   judging;              /* drop_pid != 0: its reload did not end */
bool   judger_alive;         /* the coordinator that recorded it */
byte   judged;               /* judgements of the drop that ended */

/* per worker: versions of its runtimes and of their prepared twins */
byte   rt[N * RT];
byte   nx[N * RT];
byte   cn[N * RT];           /* canary twins */
byte   seen[N];
bool   ev[N];                /* an inotify event not acted on yet */

/* observers */
byte   in_reload;
byte   coords_done;
byte   respawns;
byte   faults;
byte   spawned;              /* drop reloads started (at most 3) */

#define LIVE(i)   alive[i]

/* the lowest live slot that watches: the one that acts on a drop */
#define ACTOR(i)  (watches[i] && !(i == 1 && alive[0] && watches[0]))


inline prepared_of(i, p) {
    p = 0;
    k = 0;
    do
    :: k < RT -> if :: nx[i * RT + k] -> p = nx[i * RT + k] :: else fi; k++
    :: else -> break
    od
}


/* registry_commit: every runtime ends on current (twin or new start) */
inline converge(i) {
    k = 0;
    do
    :: k < RT ->
        if
        :: rt[i * RT + k] != 0 -> rt[i * RT + k] = current
        :: else
        fi;
        nx[i * RT + k] = 0;
        k++
    :: else -> break
    od
}


inline drop_twins(i) {
    k = 0;
    do
    :: k < RT -> nx[i * RT + k] = 0; k++
    :: else -> break
    od
}


/*
 * canary_converge() of ngx_http_lua_ffi_canary.c: a committed canary
 * adopts the twins prepared for it, a running one gets a twin beside
 * every runtime, a promoted one's twins become the prepared ones (which
 * converge() then switches to), a retired one's go.
 */
inline canary_converge(i) {
    k = 0;
    do
    :: k < RT ->
        c = cn[i * RT + k];
        if
        :: canary == 0 && c != 0 && c == current ->
            nx[i * RT + k] = c;
            cn[i * RT + k] = 0
        :: canary == 0 && c != 0 && c != current ->
            cn[i * RT + k] = 0
        :: canary != 0 && nx[i * RT + k] == canary ->
            cn[i * RT + k] = canary;
            nx[i * RT + k] = 0
        :: canary != 0 && nx[i * RT + k] != canary && rt[i * RT + k] != 0 ->
            cn[i * RT + k] = canary
        :: else
        fi;
        k++
    :: else -> break
    od
}


/* reconcile(): the table for workers in ngx_http_lua_ffi_reload.c */
inline reconcile(i) {
    prepared_of(i, p);
    if
    :: p && cmd == PREPARE && cmd_ver == p && owner_alive -> skip
    :: else ->
        if
        :: p && p != current && p != canary -> drop_twins(i)
        :: else
        fi;
        canary_converge(i);
        converge(i)
    fi
}


proctype Worker(byte i)
{
    byte j, k, p, c;

end:
    do
    /* a command, or (follow timer) a dead coordinator's leftovers */
    :: atomic {
        LIVE(i) && (seen[i] != seq || (p > 0 && !owner_alive)) ->
        seen[i] = seq;
        reconcile(i);
        if
        :: acked[i] < seq ->
            rc_ok[i] = true;
            if
            :: cmd == PREPARE ->
                k = 0;
                do
                :: k < RT ->
                    if
                    :: rt[i * RT + k] -> nx[i * RT + k] = cmd_ver
                    :: else
                    fi;
                    k++
                :: else -> break
                od;
                if
                :: true                         /* libffi_init ok */
                :: true -> rc_ok[i] = false; drop_twins(i)
                fi
            :: else
            fi;
            acked[i] = seq
        :: else
        fi;
        prepared_of(i, p)
       }

    /* ngx.load_ffi with a new cfg: maps current, a twin if prepared */
    :: atomic {
        LIVE(i) && rt[i * RT + RT - 1] == 0 ->
        j = 0;
        rt[i * RT + j] = current;
        if
        :: canary -> cn[i * RT + j] = canary     /* canary_load() */
        :: else
        fi;
        prepared_of(i, p);
        if
        :: p -> nx[i * RT + j] = p
        :: else
        fi;
        if
        :: !watches[i] ->
            watches[i] = true;
            /* a drop it could not see: judged like one seen */
            if
            :: file_new && (!judged_new || judging) -> ev[i] = true
            :: else
            fi
        :: else
        fi
       }

    /* a drop seen: the actor acts, the others look again later */
    :: atomic {
        LIVE(i) && ev[i] && ACTOR(i) && spawned < 3 ->
        ev[i] = false;
        spawned++;
        run Coordinator(2, true, RELOAD)
       }
    :: atomic { LIVE(i) && ev[i] && judged_new && !judging -> ev[i] = false }

    /* crash (or HUP), and the master's new occupant of the slot */
    :: atomic {
        LIVE(i) && respawns < 1 ->
        respawns++;
        alive[i] = false;
        watches[i] = false;
        ev[i] = false;
        k = 0;
        do
        :: k < RT ->
            rt[i * RT + k] = 0; nx[i * RT + k] = 0; cn[i * RT + k] = 0; k++
        :: else -> break
        od;
        /* the new occupant: nothing of the old one's answers */
        acked[i] = seq;
        seen[i] = seq;
        rc_ok[i] = true;
        p = 0;
        alive[i] = true
       }
    od
}


/*
 * FAULT: a deadline that passes, a coordinator that dies, a transient
 * failure; at most MAXFAULTS of them in a run, so that every run ends
 * (nothing fails for ever: the deadlines are real time).
 */
#define MAXFAULTS  1
#define FAULT      (faults < MAXFAULTS) -> faults++


proctype Coordinator(byte id; bool drop; mtype kind)
{
    byte i, v, myseq;
    bool ok, mine, promote;

    /* WAIT */
    do
    :: atomic {
        owner == 0 || !owner_alive ->
        owner = id;
        owner_alive = true;
        in_reload++;
        assert(in_reload == 1);
        break
       }
    :: atomic {
        FAULT;                       /* deadline: 503, a drop retried */
        if
        :: drop -> ev[0] = watches[0]; ev[1] = watches[1]
        :: else
        fi;
        goto done
       }
    od;

    /* CHECK */
    if
    :: atomic {
        drop && judged_new && !judging ->   /* already judged: 304 */
        goto release
       }
    :: atomic {
        /* new, or recorded by a coordinator that died before it ended */
        drop && (!judged_new || judging) ->
        assert(!judging || !judger_alive);
        judged_new = true;
        judging = true;
        judger_alive = true;
        mine = true
       }
    :: atomic {
        drop && (!judged_new || judging) && FAULT;
        /* transient (EMFILE): not judged, the watcher tries again */
        ev[0] = watches[0];
        ev[1] = watches[1];
        goto release
       }
    :: !drop -> skip                /* admin reload or rollback */
    fi;

    if
    :: kind == END ->
        /* promote or retire: no file, no prepare; 409 if none runs */
        if
        :: canary == 0 -> goto release
        :: FAULT; goto dead
        :: canary != 0 -> promote = true
        :: canary != 0 -> promote = false
        fi;
        atomic {
            seq++;
            cmd = COMMIT;
            if
            :: promote -> current = canary
            :: else
            fi;
            v = canary;
            canary = 0;
            myseq = seq
        };
        goto confirm
    :: else
    fi;

    if
    :: canary != 0 -> goto release   /* 409: a canary runs */
    :: else
    fi;

    if
    :: current >= MAXV || top >= MAXV -> goto release
    :: true -> goto release          /* refused: 409, 422 */
    :: FAULT; goto dead
    :: current < MAXV && top < MAXV -> v = top + 1
    fi;

    /* PREPARE */
    atomic { seq++; cmd = PREPARE; cmd_ver = v; myseq = seq }
    do
    :: atomic {
        (!LIVE(0) || acked[0] >= myseq) && (!LIVE(1) || acked[1] >= myseq) ->
        ok = (!LIVE(0) || rc_ok[0]) && (!LIVE(1) || rc_ok[1]);
        break
       }
    :: FAULT; ok = false; break      /* deadline */
    :: FAULT; goto dead
    od;

    if
    :: !ok -> atomic { seq++; cmd = ABORT; myseq = seq }; goto release
    :: else
    fi;

    /* COMMIT */
    atomic {
        seq++;
        cmd = COMMIT;
        if
        :: kind == CANARY -> canary = v
        :: else -> current = v
        fi;
        top = v;
        myseq = seq
    };

confirm:
    do
    :: atomic {
        (!LIVE(0) || acked[0] >= myseq) && (!LIVE(1) || acked[1] >= myseq) ->
        /*
         * 200: every live worker serves v; a canary's: every runtime has
         * its twin on v; a promotion's or retirement's: none has one.
         */
        i = 0;
        do
        :: i < N * RT ->
            assert(!alive[i / RT] || rt[i] == 0
                   || (kind == RELOAD && rt[i] == v)
                   || (kind == CANARY && rt[i] == current && cn[i] == v)
                   || (kind == END && rt[i] == current && cn[i] == 0));
            i++
        :: else -> break
        od;
        break
       }
    :: FAULT; break                  /* deadline: 202, names the others */
    :: FAULT; goto dead
    od;

release:
    atomic {
        if
        :: mine ->                   /* drop_pid := 0: judged now */
            judging = false;
            judged++;
            assert(judged <= 1)
        :: else
        fi;
        owner = 0; owner_alive = false; in_reload--; goto done
    };

dead:
    /*
     * killed: the owner is not alive any more; nothing else is undone. A
     * drop it recorded stays open (drop_pid left set): the watchers look
     * again (their retry timer, or the respawned occupant's "missed").
     */
    atomic {
        owner_alive = false;
        in_reload--;
        if
        :: mine ->
            judger_alive = false;
            ev[0] = watches[0];
            ev[1] = watches[1]
        :: else
        fi
    };

done:
    coords_done++
}


/* a new file at the library's path, or none in this run */
proctype Drop()
{
    if
    :: atomic {
        file_new = true;
        ev[0] = watches[0];
        ev[1] = watches[1]
       }
    :: skip
    fi
}


/* at the end: everyone converged, and a watched drop was judged */
proctype Check()
{
    byte i;

    atomic {
        timeout ->
        i = 0;
        do
        :: i < N * RT ->
            assert(!alive[i / RT] || rt[i] == 0 || rt[i] == current);
            assert(!alive[i / RT] || rt[i] == 0 || cn[i] == canary);
            assert(nx[i] == 0);
            i++
        :: else -> break
        od;
        assert(!(file_new && (watches[0] || watches[1]))
               || (judged_new && !judging))
    }
}


init {
    atomic {
        alive[0] = true;
        alive[1] = true;
        rc_ok[0] = true;
        rc_ok[1] = true;
        run Worker(0);
        run Worker(1);
        /*
         * A reload racing a drop, or a canary racing its promotion or
         * retirement (no drop: the state space stays small enough).
         */
        if
        :: run Coordinator(1, false, RELOAD); run Drop()
        :: run Coordinator(1, false, CANARY); run Coordinator(3, false, END)
        fi;
        run Check()
    }
}
