# bash completion for dsh(1)                                  -*- shell-script -*-
#
# Install: source this file, or copy it to
# /usr/share/bash-completion/completions/dsh (or ~/.local/share/bash-completion/completions/dsh).
#
# It follows dsh's own argument parsing (dsh/cli.py): options come first; the
# first word that is not an option is the `explain` subcommand or SCRIPT, and
# every word after it belongs to the script (offered as file names). After
# `-c TEXT`, words beginning with `-` are still dsh options until the first
# other word or `--`.

# Options that take a value, and options that do not.
_dsh_opts_with_arg="--session --store --ssh-config --host-keys --config"
_dsh_opts_flag="--json --verbose --version --help"
_dsh_subcommands="explain log"

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
    # state: opts (reading dsh options), text (-c given: its ARGS), rest (after SCRIPT/explain/--)
    local state=opts want_arg="" i word opt
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if [[ -n $want_arg ]]; then
            want_arg=""
            continue
        fi
        [[ $state == rest ]] && break
        case $word in
            --)
                state=rest
                ;;
            =)
                # the value of --opt=value split by readline
                [[ ${COMP_WORDS[i - 1]} == --* ]] && ((i++))
                ;;
            --*)
                opt=$(_dsh_long_opt "$word")
                if [[ $word != *=* && " $_dsh_opts_with_arg " == *" $opt "* ]]; then
                    if [[ $((i + 1)) -lt $COMP_CWORD && ${COMP_WORDS[i + 1]} == "=" ]]; then
                        ((i++))
                    fi
                    want_arg=1
                fi
                ;;
            -?*)
                # a cluster of short options: -v, -h, -c TEXT, -cTEXT, -vc TEXT
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
                # the first word that is not an option: SCRIPT, `explain`, or (after -c) an ARG
                state=rest
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
            --ssh-config | --config)
                _dsh_files "$cur"
                ;;
            *)
                # --session NAME, -c TEXT: nothing to offer
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

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "-c -v -h $_dsh_opts_with_arg $_dsh_opts_flag" -- "$cur"))
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
