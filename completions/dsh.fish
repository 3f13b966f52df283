# fish completion for dsh(1).
#
# Install: copy this file to ~/.config/fish/completions/dsh.fish (or to
# /usr/share/fish/vendor_completions.d/dsh.fish).
#
# It follows dsh's own argument parsing (dsh/cli/): options come first; the
# first word that is not an option is a subcommand (explain, log, run, attach,
# ls, kill, rm, signal, key, serve, admin, approve) or SCRIPT, and every word after SCRIPT belongs
# to the script (offered as file names). After `-c TEXT`, words beginning with `-`
# are still dsh options until the first other word or `--`. After `run`, dsh's
# options (and --detach) come again, up to SCRIPT. `attach`, `log`, `kill`, `rm`
# and `signal` complete session names, read from `dsh ls --json` (nothing if
# that fails), and `attach` also --take, `rm` also --older-than DURATION and
# --dry-run (instead of a session); `key` completes `put` and `get`;
# `serve` completes its options (--listen, --public-url, --cert, --key,
# --header-timeout, --body-timeout, --max-connections); `admin` completes
# `init` (--yes), `show` (--json), `user` (`add` NAME --service|--serve,
# `rm` NAME --purge, `passwd` NAME), `team` (`add` TEAM --member NAME…,
# `rm` TEAM --purge, `member` `add`|`rm` TEAM NAME…) and `migrate` (--map
# OSUSER=ETCDUSER, again and again, --dry-run, --force); `approve` completes
# --deny and --comment TEXT (SESSION and TEXT: nothing to offer; the sessions
# that ask are in a team's etcd). --team TEAM takes a value, with nothing to
# offer: which teams there are is known to etcd alone.

# The words before the cursor, without the command name.
function __fish_dsh_tokens
    if string match -qr '^[4-9]' -- $version
        commandline -xpc
    else
        commandline -opc
    end
end

# The long option that a word names (exact, or an unambiguous prefix, as argparse accepts).
function __fish_dsh_long_opt -a word
    set -l name (string split -m1 = -- $word)[1]
    set -l all --session --store --team --ssh-config --host-keys --askpass --config --inventory --outdir --ask-pass --insecure-store --json --verbose --version --help
    if contains -- $name $all
        echo $name
        return
    end
    set -l found (string match -- "$name*" $all)
    test (count $found) -eq 1; and echo $found
end

# Where the cursor is, as dsh parses the words before it: prints `opts` (dsh
# reads its own options), `c` (the same, with -c given), `run` (after `run`,
# dsh's options again), `sub NAME N` (after the subcommand NAME, with N
# arguments other than options after it; for `admin`, `sub admin N WORD…`
# with those words), `output` (after `log … --output`, its ACTION and HOST,
# or `approve … --comment`, its TEXT) or `rest` (after SCRIPT, -c's first ARG
# or `--`).
function __fish_dsh_where
    set -l tokens (__fish_dsh_tokens)
    set -e tokens[1]
    set -l want_arg 0
    set -l saw_c 0
    set -l in_run 0
    set -l sub
    set -l n 0
    set -l args
    set -l skip 0
    for tok in $tokens
        if test -n "$sub"
            if test $skip -gt 0
                set skip (math $skip - 1)
            else if test "$tok" = --output
                set skip 2 # log --output ACTION HOST
            else if test "$sub" = approve -a "$tok" = --comment
                set skip 1 # approve --comment TEXT
            else if not string match -q -- '-*' $tok
                set n (math $n + 1)
                test "$sub" = admin; and set -a args $tok
            end
            continue
        end
        if test $want_arg -eq 1
            set want_arg 0
            continue
        end
        switch $tok
            case --
                echo rest
                return
            case '--*=*'
            case '--*'
                if contains -- (__fish_dsh_long_opt $tok) --session --store --team --ssh-config --host-keys --askpass --config --inventory --outdir
                    set want_arg 1
                end
            case '-*'
                # a cluster of short options: -v, -h, -A, -c TEXT, -cTEXT, -vc TEXT
                set -l cluster (string sub -s 2 -- $tok)
                if string match -qr '^[hvA]*c$' -- $cluster
                    set want_arg 1
                    set saw_c 1
                else if string match -qr '^[hvA]*c' -- $cluster
                    set saw_c 1
                end
            case explain log attach ls kill rm signal key serve admin approve
                if test $saw_c -eq 1 -o $in_run -eq 1
                    echo rest
                    return
                end
                set sub $tok
            case run
                if test $saw_c -eq 1 -o $in_run -eq 1
                    echo rest
                    return
                end
                set in_run 1
            case '*'
                echo rest
                return
        end
    end
    if test -n "$sub" -a $skip -gt 0
        echo output
    else if test -n "$sub"
        echo sub $sub $n $args
    else if test $in_run -eq 1
        echo run
    else if test $saw_c -eq 1
        echo c
    else
        echo opts
    end
end

function __fish_dsh_reading_options
    contains -- (__fish_dsh_where) opts c run
end

function __fish_dsh_wants_subcommand
    test (__fish_dsh_where) = opts
end

function __fish_dsh_in_run
    test (__fish_dsh_where) = run
end

# Succeeds after the subcommand $argv[1] with fewer than $argv[2] (default: any
# number of) arguments after it.
function __fish_dsh_after -a name max
    set -l where (string split ' ' -- (__fish_dsh_where))
    test "$where[1]" = sub -a "$where[2]" = $name; or return 1
    test -z "$max"; or test $where[3] -lt $max
end

# Succeeds after `admin` and words, options aside, that the glob $argv[1]
# matches as one string ('' for none, 'user', 'user add*').
function __fish_dsh_admin -a pattern
    set -l where (string split ' ' -- (__fish_dsh_where))
    test "$where[1]" = sub -a "$where[2]" = admin; or return 1
    set -e where[1..3]
    string match -q -- "$pattern" "$where"
end

# Succeeds after `rm --older-than` (with its duration or not).
function __fish_dsh_rm_older
    __fish_dsh_after rm; and string match -qr -- '^--older-than' (__fish_dsh_tokens)
end

# The sessions in the store (the --store given on the line, if any), from
# `dsh ls --json`; nothing when dsh is missing or fails, or when the store's
# file does not exist (completing never creates a store). Session names are
# letters, digits, '.', '_' and '-' only, so the JSON needs no decoding.
function __fish_dsh_sessions
    command -q dsh; or return 0
    set -l store
    set -l tokens (__fish_dsh_tokens)
    for i in (seq (count $tokens))
        switch $tokens[$i]
            case '--store=*' '--stor=*' '--sto=*' '--st=*'
                set store (string split -m1 = -- $tokens[$i])[2]
            case --store --stor --sto --st
                test $i -lt (count $tokens); and set store $tokens[(math $i + 1)]
        end
    end
    set -l url $store
    test -n "$url"; or set url $DSH_STORE
    test -n "$url"; or set url local
    set -l state_home $XDG_STATE_HOME
    test -n "$state_home"; or set state_home $HOME/.local/state
    switch $url
        case local
            test -f $state_home/dsh/store.db; or return 0
        case 'sqlite://*'
            test -f (string replace -r '^sqlite://' '' -- $url); or return 0
        case '*'
            return 0
    end
    set -l cmd dsh
    test -n "$store"; and set cmd $cmd --store $store
    set cmd $cmd ls --json
    command -q timeout; and set cmd timeout 5 $cmd
    command $cmd 2>/dev/null </dev/null | string replace -rf '^\{"name": "([A-Za-z0-9._-]+)".*' '$1'
end

# SCRIPT and the script's arguments are files (fish's default); options only before them.
complete -c dsh -n '__fish_dsh_reading_options; and not __fish_dsh_in_run' -s c -x -d 'Run TEXT (further arguments are $1…)'
complete -c dsh -n __fish_dsh_reading_options -l session -x -d "The session's name (default: \$DSH_SESSION)"
complete -c dsh -n __fish_dsh_reading_options -l team -x -d "Work in a team's sessions and keys (on etcd, as one of its members)"
complete -c dsh -n __fish_dsh_reading_options -l store -x -a 'local\t"the default" sqlite:///\t"a SQLite file"' -d 'Where sessions are kept (default: $DSH_STORE or local)'
complete -c dsh -n __fish_dsh_reading_options -l ssh-config -r -F -d 'An ssh config file instead of ~/.ssh/config'
complete -c dsh -n __fish_dsh_reading_options -l askpass -r -F -d 'A program that prints the answer to a prompt (a sudo password)'
complete -c dsh -n __fish_dsh_reading_options -l inventory -r -F -d 'An Ansible inventory (INI or YAML): its groups are @{NAME} and @{inventory:NAME}'
complete -c dsh -n __fish_dsh_reading_options -l outdir -x -a '(__fish_complete_directories)' -d "Also write every action's output to DIR/ACTION/HOST.out|err"
complete -c dsh -n __fish_dsh_reading_options -l host-keys -x -a 'strict\t"refuse keys not in known_hosts (the default)" accept-new\t"record the key of a new host" off\t"trust a new host without recording"' -d 'Host keys not in known_hosts: refuse, record or trust; a changed key is always refused'
complete -c dsh -n __fish_dsh_reading_options -l config -r -F -d "dsh's configuration file (default: \$DSH_CONFIG or \$XDG_CONFIG_HOME/dsh/config.toml)"
complete -c dsh -n __fish_dsh_reading_options -l ask-pass -d 'Log in with a password where a host takes no key'
complete -c dsh -n __fish_dsh_reading_options -l insecure-store -d 'Accept an etcd elsewhere without TLS or authentication'
complete -c dsh -n __fish_dsh_reading_options -s A -d 'Forward the ssh agent to every host'
complete -c dsh -n __fish_dsh_reading_options -l json -d 'One JSON object per output line and result'
complete -c dsh -n __fish_dsh_reading_options -s v -l verbose -d 'Show Python tracebacks'
complete -c dsh -n __fish_dsh_reading_options -l version -d 'Print the version and exit'
complete -c dsh -n __fish_dsh_reading_options -s h -l help -d 'Show a usage summary and exit'

# The subcommand (it wins over a file of the same name; ./explain runs the file).
complete -c dsh -n __fish_dsh_wants_subcommand -a explain -d 'Show the compiled plan and its worst case, run nothing'
complete -c dsh -n __fish_dsh_wants_subcommand -a log -d 'Show the journal of a session as a timeline'
complete -c dsh -n __fish_dsh_wants_subcommand -a run -d 'Run a script; with --detach, in a process of its own'
complete -c dsh -n __fish_dsh_wants_subcommand -a attach -d 'Join a session: its output and a prompt in it; take it over if its owner died'
complete -c dsh -n __fish_dsh_wants_subcommand -a ls -d 'List the sessions and their state'
complete -c dsh -n __fish_dsh_wants_subcommand -a kill -d 'Stop the work of a session and end the commands it left running'
complete -c dsh -n __fish_dsh_wants_subcommand -a rm -d 'Remove a session and its spools'
complete -c dsh -n __fish_dsh_wants_subcommand -a signal -d 'Send a session a signal that an await waits for'
complete -c dsh -n __fish_dsh_wants_subcommand -a key -d 'Set or print a key of yours in the store'
complete -c dsh -n __fish_dsh_wants_subcommand -a serve -d 'Take the POSTs that callbacks wait for, into the store'
complete -c dsh -n __fish_dsh_wants_subcommand -a admin -d "Set up and show etcd's users and roles for dsh (as etcd's root)"
complete -c dsh -n __fish_dsh_wants_subcommand -a approve -d "Approve or deny what a team's session awaits (with --team TEAM)"

# run [OPTIONS] [--detach] SCRIPT [ARGS…]: the options above, --detach, then files.
complete -c dsh -n __fish_dsh_in_run -l detach -d 'Start the script in a process of its own; print the session name'
# ls [--json]; attach [--take] SESSION; kill|rm SESSION; rm --older-than D [--dry-run];
# log SESSION [-f] [--json]
# [--output ACTION HOST]; signal SESSION NAME [VALUE]; key put KEY VALUE | key get KEY;
# serve [--listen ADDR:PORT] [--public-url URL] [--cert FILE --key FILE]
# [--header-timeout D] [--body-timeout D] [--max-connections N];
# admin init [--yes] | show [--json] | user add NAME [--service|--serve] |
# user rm NAME [--purge] | user passwd NAME | team add TEAM --member NAME… |
# team rm TEAM [--purge] | team member add|rm TEAM NAME… |
# migrate [--map OSUSER=ETCDUSER]… [--dry-run] [--force];
# approve SESSION [--deny] [--comment TEXT]: no files (but after --cert and --key).
complete -c dsh -n '__fish_dsh_after ls' -f -l json -d 'One JSON object per session'
complete -c dsh -n '__fish_dsh_after ls' -f -l all -d 'Also the sessions of single runs (dsh -c without --session)'
complete -c dsh -n '__fish_dsh_after log' -f -l json -d 'One JSON object per journal entry'
complete -c dsh -n '__fish_dsh_after log' -f -s f -l follow -d 'Go on printing new entries while the session runs'
complete -c dsh -n '__fish_dsh_after log' -f -l output -d "The whole output of one action (ACTION HOST) from its host's spool"
complete -c dsh -n '__fish_dsh_after attach' -f -l take -d 'Ask a live owner on another machine to hand the session over, and take it'
complete -c dsh -n '__fish_dsh_after rm 1' -f -l older-than -x -a '30d 7d 1d 12h' -d 'Remove every finished session untouched for this long, instead of one'
complete -c dsh -n '__fish_dsh_after rm 1; or __fish_dsh_rm_older' -f -l dry-run -d 'With --older-than: list what would be removed, remove nothing'
complete -c dsh -n '__fish_dsh_after serve' -f -l listen -x -a '127.0.0.1:8470\t"the default" 0.0.0.0:8470\t"every address"' -d 'The address and port to listen on (default: 127.0.0.1:8470)'
complete -c dsh -n '__fish_dsh_after serve' -f -l public-url -x -d 'The base of the callback URLs, as the senders of POSTs reach this server'
complete -c dsh -n '__fish_dsh_after serve' -l cert -r -F -d 'Serve HTTPS with this certificate chain (PEM; needs --key)'
complete -c dsh -n '__fish_dsh_after serve' -l key -r -F -d 'The private key of --cert (PEM)'
complete -c dsh -n '__fish_dsh_after serve' -f -l header-timeout -x -a '10s\t"the default" 500ms' -d 'The time a client has to send its request line and headers'
complete -c dsh -n '__fish_dsh_after serve' -f -l body-timeout -x -a '10s\t"the default" 500ms' -d 'The time a client has to send its body after them'
complete -c dsh -n '__fish_dsh_after serve' -f -l max-connections -x -d 'Connections open at once (default: 256)'
complete -c dsh -n '__fish_dsh_after approve; and not contains -- --deny (__fish_dsh_tokens)' -f -l deny -d 'Deny it: the await fails at once'
complete -c dsh -n '__fish_dsh_after approve; and not contains -- --comment (__fish_dsh_tokens)' -f -x -l comment -d 'A comment for the journal (one line)'
complete -c dsh -n '__fish_dsh_after attach 1; or __fish_dsh_after log 1; or __fish_dsh_after kill 1; or __fish_dsh_after rm 1; or __fish_dsh_after signal 1' -f -a '(__fish_dsh_sessions)' -d Session
complete -c dsh -n '__fish_dsh_after key 1' -f -a 'put\t"Set a key to a value" get\t"Print the value of a key"'
complete -c dsh -n "__fish_dsh_admin ''" -f -a 'init\t"Turn etcd\'s authentication on and make dsh\'s roles" show\t"Show the accounts, the database and the alarms" user\t"Add or remove an etcd user, or change its password" team\t"Make or remove a team, or put people into it or out of it" migrate\t"Move what an older dsh kept (OS users\' trees, global callbacks) where dsh keeps it now"'
complete -c dsh -n '__fish_dsh_admin user' -f -a 'add\t"Make a person\'s account (or a service\'s, or one for dsh serve)" rm\t"Take a user out of this installation: its roles, its record (the user too if it has no other role)" passwd\t"Give a user a new password"'
complete -c dsh -n '__fish_dsh_admin team' -f -a 'add\t"Make a team (if it is not there) with these people in it" rm\t"Take every member out and remove the team (its tree too with --purge)" member\t"Put people into a team, or take them out"'
complete -c dsh -n "__fish_dsh_admin 'team member'" -f -a 'add\t"Put people into the team" rm\t"Take people out of the team: etcd refuses them in it at once"'
complete -c dsh -n '__fish_dsh_admin init' -f -l yes -d 'Make the changes (without it, list them and exit 2)'
complete -c dsh -n '__fish_dsh_admin show' -f -l json -d 'The facts as one JSON object'
complete -c dsh -n '__fish_dsh_admin "user add*"; and not contains -- --service (__fish_dsh_tokens); and not contains -- --serve (__fish_dsh_tokens)' -f -l service -d "A service's account, not a person's"
complete -c dsh -n '__fish_dsh_admin "user add*"; and not contains -- --service (__fish_dsh_tokens); and not contains -- --serve (__fish_dsh_tokens)' -f -l serve -d 'An account for dsh serve (its role only)'
complete -c dsh -n '__fish_dsh_admin "user rm*"' -f -l purge -d "Also remove the user's tree of sessions and keys"
complete -c dsh -n '__fish_dsh_admin "team add*"; and not contains -- --member (__fish_dsh_tokens)' -f -l member -d "The team's people (persons' accounts) follow it"
complete -c dsh -n '__fish_dsh_admin "team rm*"' -f -l purge -d "Also remove the team's tree of sessions and keys"
complete -c dsh -n '__fish_dsh_admin "migrate*"' -x -l map -d 'Move the tree of an OS user into that of an etcd user (OSUSER=ETCDUSER)'
complete -c dsh -n '__fish_dsh_admin "migrate*"; and not contains -- --dry-run (__fish_dsh_tokens)' -f -l dry-run -d 'Say what would move, and move nothing'
complete -c dsh -n '__fish_dsh_admin "migrate*"; and not contains -- --force (__fish_dsh_tokens)' -f -l force -d 'Also move sessions with work left, and callbacks still awaited'
complete -c dsh -n 'contains -- (__fish_dsh_where) output; or __fish_dsh_after attach; or __fish_dsh_after log; or __fish_dsh_after ls; or __fish_dsh_after kill; or __fish_dsh_after rm; or __fish_dsh_after signal; or __fish_dsh_after key; or __fish_dsh_after serve; or __fish_dsh_after admin; or __fish_dsh_after approve' -f
