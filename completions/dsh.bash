# bash completion for dsh(1)                                  -*- shell-script -*-
#
# Install: source this file, or copy it to
# /usr/share/bash-completion/completions/dsh (or ~/.local/share/bash-completion/completions/dsh).
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

# Options that take a value, and options that do not.
_dsh_opts_with_arg="--session --store --team --ssh-config --host-keys --askpass --config --inventory --outdir"
_dsh_opts_flag="--ask-pass --insecure-store --json --verbose --version --help"
_dsh_subcommands="explain log attach ls run kill rm signal key serve admin approve"
# The options of `serve`: each takes a value.
_dsh_serve_opts="--listen --public-url --cert --key --header-timeout --body-timeout --max-connections"

# The long option that WORD names (an exact name or an unambiguous prefix, as
# argparse accepts), or nothing.
_dsh_long_opt() {
    local word=${1%%=*} opt found=
    for opt in $_dsh_opts_with_arg $_dsh_opts_flag; do
        if [[ $opt == "$word" ]]; then
            printf '%s' "$opt"
            return
        fi
        if [[ $opt == "$word"* ]]; then
            [[ -n $found ]] && return # ambiguous
            found=$opt
        fi
    done
    printf '%s' "$found"
}

_dsh_files() {
    compopt -o filenames 2>/dev/null
    local IFS=$'\n'
    COMPREPLY=($(compgen -f -- "$1"))
}

# The names of the sessions in the store ($1: a --store URL, or empty), from
# `dsh ls --json`; nothing when dsh is missing or fails, or when the store's
# file does not exist (completing never creates a store). Session names are
# letters, digits, '.', '_' and '-' only, so the JSON needs no decoding.
_dsh_sessions() {
    local dsh=${COMP_WORDS[0]:-dsh} store=${1:-${DSH_STORE:-local}}
    case $store in
        local) [[ -f ${XDG_STATE_HOME:-$HOME/.local/state}/dsh/store.db ]] || return 0 ;;
        sqlite://*) [[ -f ${store#sqlite://} ]] || return 0 ;;
        *) return 0 ;;
    esac
    type -P "$dsh" >/dev/null 2>&1 || dsh=dsh
    type -P "$dsh" >/dev/null 2>&1 || return 0
    local -a argv=("$dsh")
    [[ -n $1 ]] && argv+=(--store "$1")
    argv+=(ls --json)
    if type -P timeout >/dev/null 2>&1; then
        argv=(timeout 5 "${argv[@]}")
    fi
    "${argv[@]}" 2>/dev/null </dev/null | sed -n 's/^{"name": "\([A-Za-z0-9._-]*\)".*/\1/p' 2>/dev/null
}

_dsh() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local prev=""
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    COMPREPLY=()

    # --opt=value, whether or not '=' is a word break for readline.
    local value_of="" prefix=""
    if [[ $cur == "=" && $prev == --* ]]; then
        value_of=$(_dsh_long_opt "$prev")
        cur=""
    elif [[ $prev == "=" && COMP_CWORD -ge 2 && ${COMP_WORDS[COMP_CWORD - 2]} == --* ]]; then
        value_of=$(_dsh_long_opt "${COMP_WORDS[COMP_CWORD - 2]}")
    elif [[ $cur == --*=* ]]; then
        value_of=$(_dsh_long_opt "$cur")
        prefix=${cur%%=*}=
        cur=${cur#*=}
    fi

    # Walk the words before the cursor as dsh parses them.
    # state: opts (reading dsh options), text (-c given: its ARGS), run (after
    # `run`: dsh options again), sub (after another subcommand: $sub, with $nargs
    # words after it, $sub_args, that are not options), rest (after SCRIPT or --)
    local state=opts want_arg="" i word opt sub="" nargs=0 skip=0 flags="" store="" sub_opt=""
    local -a sub_args=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if [[ -n $want_arg ]]; then
            [[ $want_arg == --store ]] && store=$word
            want_arg=""
            continue
        fi
        [[ $state == rest ]] && break
        if [[ $state == sub ]]; then
            if ((skip > 0)); then
                ((skip--))
            elif [[ $word == --output ]]; then
                skip=2 # log --output ACTION HOST
            elif [[ $sub == rm && $word == --older-than ]]; then
                sub_opt=$word # rm --older-than DURATION (or --older-than = DURATION)
                flags+=" $word "
                skip=1
                if [[ $((i + 1)) -lt $COMP_CWORD && ${COMP_WORDS[i + 1]} == "=" ]]; then
                    ((i++))
                fi
            elif [[ $sub == approve && $word == --comment ]]; then
                sub_opt=$word # approve --comment TEXT
                flags+=" $word "
                skip=1
            elif [[ $sub == serve && " $_dsh_serve_opts " == *" $word "* ]]; then
                # serve --opt VALUE, or --opt = VALUE when readline splits at '='
                sub_opt=$word
                flags+=" $word "
                skip=1
                if [[ $((i + 1)) -lt $COMP_CWORD && ${COMP_WORDS[i + 1]} == "=" ]]; then
                    ((i++))
                fi
            elif [[ $word == -* ]]; then
                flags+=" ${word%%=*} "
            else
                sub_args+=("$word")
                ((nargs++))
            fi
            continue
        fi
        case $word in
            --)
                state=rest
                ;;
            =)
                # the value of --opt=value split by readline
                if [[ ${COMP_WORDS[i - 1]} == --* ]]; then
                    [[ $(_dsh_long_opt "${COMP_WORDS[i - 1]}") == --store ]] && store=${COMP_WORDS[i + 1]}
                    ((i++))
                fi
                ;;
            --*)
                opt=$(_dsh_long_opt "$word")
                if [[ $word == *=* ]]; then
                    [[ $opt == --store ]] && store=${word#*=}
                elif [[ " $_dsh_opts_with_arg " == *" $opt "* ]]; then
                    if [[ $((i + 1)) -lt $COMP_CWORD && ${COMP_WORDS[i + 1]} == "=" ]]; then
                        ((i++))
                    fi
                    want_arg=$opt
                fi
                ;;
            -?*)
                # a cluster of short options: -v, -h, -A, -c TEXT, -cTEXT, -vc TEXT
                local cluster=${word#-}
                while [[ -n $cluster ]]; do
                    if [[ ${cluster:0:1} == c ]]; then
                        [[ -z ${cluster:1} ]] && want_arg=1
                        state=text
                        break
                    fi
                    cluster=${cluster:1}
                done
                ;;
            *)
                # the first word that is not an option: SCRIPT, a subcommand, or (after -c) an ARG
                if [[ $state == opts && " $_dsh_subcommands " == *" $word "* ]]; then
                    sub=$word
                    if [[ $word == run ]]; then
                        state=run
                    else
                        state=sub
                    fi
                else
                    state=rest
                fi
                ;;
        esac
    done

    if [[ -n $value_of || -n $want_arg ]]; then
        [[ -z $value_of ]] && value_of=$prev
        case $(_dsh_long_opt "$value_of") in
            --store)
                compopt -o nospace 2>/dev/null
                COMPREPLY=($(compgen -W "local sqlite:///" -- "$cur"))
                ;;
            --host-keys)
                COMPREPLY=($(compgen -W "strict accept-new off" -- "$cur"))
                ;;
            --ssh-config | --config | --askpass | --inventory)
                _dsh_files "$cur"
                ;;
            --outdir)
                compopt -o filenames 2>/dev/null
                COMPREPLY=($(compgen -d -- "$cur"))
                ;;
            *)
                # --session NAME, --team TEAM, -c TEXT: nothing to offer
                ;;
        esac
        # '=' is not a word break here: the reply replaces the whole --opt=value
        [[ -n $prefix ]] && COMPREPLY=("${COMPREPLY[@]/#/$prefix}")
        return 0
    fi

    if [[ $state == rest ]]; then
        _dsh_files "$cur"
        return 0
    fi

    if [[ $state == sub ]]; then
        case $sub in
            ls)
                COMPREPLY=($(compgen -W "--json --all" -- "$cur"))
                ;;
            key)
                # key put KEY VALUE | key get KEY
                ((nargs == 0)) && COMPREPLY=($(compgen -W "put get" -- "$cur"))
                ;;
            serve)
                # serve [--listen ADDR:PORT] [--public-url URL] [--cert FILE --key FILE]
                # [--header-timeout D] [--body-timeout D] [--max-connections N]
                [[ -n $prefix ]] && sub_opt=${prefix%=} skip=1 # --opt=VALUE in one word
                if ((skip > 0)); then
                    case $sub_opt in
                        --cert | --key) _dsh_files "$cur" ;;
                        --listen) COMPREPLY=($(compgen -W "127.0.0.1:8470 0.0.0.0:8470" -- "$cur")) ;;
                        --header-timeout | --body-timeout) COMPREPLY=($(compgen -W "10s 500ms" -- "$cur")) ;;
                        *) ;; # --public-url URL, --max-connections N: nothing to offer
                    esac
                    [[ -n $prefix ]] && COMPREPLY=("${COMPREPLY[@]/#/$prefix}")
                elif [[ $cur == -* ]]; then
                    local flag offer=""
                    for flag in $_dsh_serve_opts; do
                        [[ $flags == *" $flag "* ]] || offer+=" $flag"
                    done
                    COMPREPLY=($(compgen -W "$offer" -- "$cur"))
                fi
                ;;
            admin)
                # admin init [--yes] | show [--json] | user add NAME [--service|--serve]
                # | user rm NAME [--purge] | user passwd NAME | team add TEAM --member NAME…
                # | team rm TEAM [--purge] | team member add|rm TEAM NAME…
                # | migrate [--map OSUSER=ETCDUSER]… [--dry-run] [--force]
                local flag offer="" flags_of=""
                if [[ $prev == --map && ${sub_args[0]} == migrate ]]; then
                    : # OSUSER=ETCDUSER: nothing to offer
                elif [[ $cur == -* ]]; then
                    case ${sub_args[0]}:${sub_args[1]} in
                        init:) flags_of="--yes" ;;
                        show:) flags_of="--json" ;;
                        user:add) flags_of="--service --serve" ;; # one or the other
                        user:rm) flags_of="--purge" ;;
                        team:add) flags_of="--member" ;; # then the names
                        team:rm) flags_of="--purge" ;;
                        migrate:*) flags_of="--dry-run --force" ;; # the mapped names are args
                    esac
                    [[ $flags == *" --service "* || $flags == *" --serve "* ]] && flags_of=""
                    for flag in $flags_of; do
                        [[ $flags == *" $flag "* ]] || offer+=" $flag"
                    done
                    [[ ${sub_args[0]} == migrate ]] && offer+=" --map" # given once for each person
                elif ((nargs == 0)); then
                    offer="init show user team migrate"
                elif ((nargs == 1)) && [[ ${sub_args[0]} == user ]]; then
                    offer="add rm passwd"
                elif ((nargs == 1)) && [[ ${sub_args[0]} == team ]]; then
                    offer="add rm member"
                elif ((nargs == 2)) && [[ ${sub_args[0]}:${sub_args[1]} == team:member ]]; then
                    offer="add rm"
                fi
                # NAME, TEAM: nothing to offer
                COMPREPLY=($(compgen -W "$offer" -- "$cur"))
                ;;
            approve)
                # approve SESSION [--deny] [--comment TEXT]: SESSION and TEXT, nothing to offer
                if ((skip == 0)) && [[ $cur == -* ]]; then
                    local flag offer=""
                    for flag in --deny --comment; do
                        [[ $flags == *" $flag "* ]] || offer+=" $flag"
                    done
                    COMPREPLY=($(compgen -W "$offer" -- "$cur"))
                fi
                ;;
            attach | log | kill | rm | signal)
                # signal SESSION NAME [VALUE]: the session, then nothing to offer
                [[ $sub == rm && $prefix == --older-than= ]] && sub_opt=--older-than skip=1
                if ((skip > 0)); then
                    # log --output ACTION HOST: nothing to offer
                    if [[ $sub_opt == --older-than ]]; then
                        COMPREPLY=($(compgen -W "30d 7d 1d 12h" -- "$cur"))
                        [[ -n $prefix ]] && COMPREPLY=("${COMPREPLY[@]/#/$prefix}")
                    fi
                elif [[ $cur == -* ]]; then
                    if [[ $sub == rm ]]; then
                        local flag offer=""
                        for flag in --older-than --dry-run; do
                            [[ $flags == *" $flag "* ]] || offer+=" $flag"
                        done
                        ((nargs == 0)) && COMPREPLY=($(compgen -W "$offer" -- "$cur"))
                    elif [[ $sub == log ]]; then
                        local flag offer=""
                        for flag in -f --follow --json --output; do
                            [[ $flags == *" $flag "* ]] || offer+=" $flag"
                        done
                        COMPREPLY=($(compgen -W "$offer" -- "$cur"))
                    elif [[ $sub == attach && $flags != *" --take "* ]]; then
                        COMPREPLY=($(compgen -W "--take" -- "$cur"))
                    fi
                elif ((nargs == 0)) && [[ $flags != *" --older-than "* && $flags != *" --dry-run "* ]]; then
                    local IFS=$'\n'
                    COMPREPLY=($(compgen -W "$(_dsh_sessions "$store")" -- "$cur"))
                fi
                ;;
            *)
                # explain TEXT|SCRIPT [ARGS]
                _dsh_files "$cur"
                ;;
        esac
        return 0
    fi

    if [[ $cur == -* ]]; then
        if [[ $state == run ]]; then
            COMPREPLY=($(compgen -W "--detach -v -h -A $_dsh_opts_with_arg $_dsh_opts_flag" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "-c -v -h -A $_dsh_opts_with_arg $_dsh_opts_flag" -- "$cur"))
        fi
        return 0
    fi

    if [[ $state == run ]]; then
        # SCRIPT
        _dsh_files "$cur"
        return 0
    fi

    if [[ $state == opts ]]; then
        _dsh_files "$cur"
        local sub
        for sub in $(compgen -W "$_dsh_subcommands" -- "$cur"); do
            [[ " ${COMPREPLY[*]} " == *" $sub "* ]] || COMPREPLY+=("$sub")
        done
    else
        _dsh_files "$cur"
    fi
    return 0
}

complete -F _dsh dsh
